"""The quickstart pipeline on tiny datasets and models: matched sizes, report, figures, numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import write_decay_dataset

import moepot
from moepot.analysis.quickstart import (
    QuickstartOptions,
    base_config,
    matched_mlp_ratio,
    resolve_sizes,
    run_quickstart,
)
from moepot.errors import ConfigError

TINY = {"res": 16, "patch_size": 4, "width": 16, "depth": 2, "modes": 3, "batch_size": 4}


def activated_by_hand(model: torch.nn.Module, top_k: int = 4, n_experts: int = 16) -> int:
    """All parameters minus the (n_experts - top_k) idle routed experts of every MoE layer."""
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return total - routed * (n_experts - top_k) // n_experts


@pytest.mark.parametrize(("width", "depth"), [(16, 2), (64, 2), (48, 3)])
def test_dense_model_matches_the_activated_parameters_of_the_moe(width, depth):
    options = QuickstartOptions(width=width, depth=depth, t_in=4)
    sizes = resolve_sizes(options)
    moe_config = base_config(options, sizes, ["a", "b"], 2, family="moepot", mlp_ratio=1.0)
    ratio = matched_mlp_ratio(moe_config)

    def build(family: str, mlp_ratio: float) -> torch.nn.Module:
        overrides = {**moe_config.model_config_overrides(), "mlp_ratio": mlp_ratio}
        with torch.device("meta"):
            return moepot.build_model(family, **overrides)

    target = activated_by_hand(build("moepot", 1.0))
    dense = sum(p.numel() for p in build("dpot", ratio).parameters())
    assert abs(dense - target) / target < 0.03
    for neighbour in (ratio - 1 / width, ratio + 1 / width):  # the closest whole hidden width
        other = sum(p.numel() for p in build("dpot", neighbour).parameters())
        assert abs(other - target) >= abs(dense - target)


def test_sizes_follow_the_device_and_reject_bad_ones():
    assert resolve_sizes(QuickstartOptions(device="cpu"))["res"] == 32
    assert resolve_sizes(QuickstartOptions(device="cpu", res=64, width=96))["width"] == 96
    with pytest.raises(ConfigError, match="expected cpu or cuda"):
        resolve_sizes(QuickstartOptions(device="tpu"))
    with pytest.raises(ConfigError, match="not a multiple of patch_size"):
        resolve_sizes(QuickstartOptions(res=30, patch_size=4))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_sizes(QuickstartOptions(device="cuda"))


@pytest.mark.slow
def test_quickstart_writes_the_report_with_both_models_on_every_dataset(tmp_path):
    from moepot.eval.evaluate import evaluate_model
    from moepot.train.loop import load_model_for_eval

    data = tmp_path / "data"
    names = ["decay_slow", "decay_fast"]
    for name, rate in zip(names, (0.95, 0.6)):
        write_decay_dataset(data, name, n_train=8, n_test=4, size=16, t_total=7, t_in=4, t_test=3, rate=rate)
    out = tmp_path / "report"
    options = QuickstartOptions(out=out, minutes=1.0, data_root=data, datasets=names, t_in=4, n_test=2,
                                max_steps=3, out_layer_dim=8, progress=False, **TINY)
    summary = run_quickstart(options)

    # Both models trained for the same steps with matched activated parameters.
    moe_run, dense_run = summary.runs
    assert moe_run.steps == dense_run.steps == 3
    assert abs(dense_run.activated_params - moe_run.activated_params) / moe_run.activated_params < 0.03

    # The table's numbers are what an independent evaluation of the saved checkpoints gives.
    for run in summary.runs:
        model = load_model_for_eval(run.checkpoint)
        again = evaluate_model(model, names, data_root=data, n_test=2)
        for name in names:
            for metric in ("rel_l2_step", "rel_l2_rollout"):
                assert run.metrics[name][metric] == pytest.approx(again[name][metric], rel=1e-5)

    markdown = (out / "report.md").read_text()
    for name in names:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        assert row.count("|") == 6  # dataset + 2 metrics x 2 models
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    for name in names:
        assert f"rollout_{name}_MoE-POT.png" in linked and f"rollout_{name}_DPOT.png" in linked
    assert {"training_curves.png", "routing_usage.png", "routing_confusion.png", "routing_entropy.png"} <= set(linked)
    for png in linked:
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(linked)

    saved = json.loads((out / "summary.json").read_text())
    assert saved["datasets"] == names and 0.0 <= saved["routing_accuracy"] <= 1.0
    assert 0.0 <= saved["routing_selection_accuracy"] <= 1.0
    assert "routing_confusion_selections.png" in linked
    assert Path(saved["report"]) == out / "report.html"
    assert "report:" in summary.text()


def test_the_report_says_when_the_models_did_not_train_for_the_same_steps():
    from moepot.analysis.quickstart import ModelRun, trained_for

    def run(label, steps):
        return ModelRun(label, "x", 10, 5, 1.0, steps=steps)

    assert trained_for([run("MoE-POT", 20), run("DPOT", 20)]) == "for the same 20 optimizer steps"
    uneven = trained_for([run("MoE-POT", 20), run("DPOT", 1)])
    assert "20 (MoE-POT) and 1 (DPOT)" in uneven and "NOT the same" in uneven


def test_quickstart_options_are_checked_in_one_line(tmp_path, capsys):
    from moepot.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["quickstart", "--minutes", "inf"])
    assert exit_.value.code == 2 and "positive finite number" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as exit_:  # checked as the options are read
        main(["quickstart", "--out", str(tmp_path / "afile"), "--data-root", str(tmp_path / "d")])
    assert exit_.value.code == 2 and "--out" in (err := capsys.readouterr().err) and "a file is there" in err


def test_a_run_stopped_early_sets_the_step_budget_of_the_next_and_the_summary_keeps_each_accuracy(
    tmp_path, monkeypatch
):
    """The comparison is at equal training: when the time cap stops the MoE-POT at 12 of 20 planned
    steps, the DPOT is trained for 12, not 20. The summary's routing_accuracy is the weighted
    classifier's and routing_selection_accuracy the selections-only one's (two distinct values here)."""
    from types import SimpleNamespace

    from moepot.analysis import quickstart
    from moepot.analysis.routing import ClassificationResult

    names = ["a", "b"]
    monkeypatch.setattr(quickstart, "ensure_data",
                        lambda *args, **kwargs: {name: SimpleNamespace(n_channels=1) for name in names})
    monkeypatch.setattr(quickstart, "plan_steps", lambda *args, **kwargs: (20, {"cap_s": 60.0}))
    asked: list[tuple[str, int]] = []

    def train_run(run, config, steps, run_dir, options, catalog, *, cap_s):
        asked.append((run.label, steps))
        run.steps = min(steps, 12)  # the first run is stopped by the cap after 12 steps

    def result(accuracy: float) -> ClassificationResult:
        return ClassificationResult("centroid", 5, accuracy, 0.5, np.array([[5, 5], [0, 10]]), (accuracy,))

    routing = SimpleNamespace(classification=result(0.9), selection_classification=result(0.6))
    monkeypatch.setattr(quickstart, "train_run", train_run)
    monkeypatch.setattr(quickstart, "write_quickstart_report",
                        lambda out, *args: (out / "report.html", routing))
    options = QuickstartOptions(out=tmp_path / "out", data_root=tmp_path / "data", datasets=names, t_in=4,
                                progress=False, **TINY)  # fmt: skip
    summary = run_quickstart(options)
    assert asked == [("MoE-POT", 20), ("DPOT", 12)]
    assert [run.steps for run in summary.runs] == [12, 12]
    assert (summary.routing_accuracy, summary.routing_selection_accuracy, summary.routing_chance) == (0.9, 0.6, 0.5)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (saved["routing_accuracy"], saved["routing_selection_accuracy"]) == (0.9, 0.6)

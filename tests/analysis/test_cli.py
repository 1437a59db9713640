"""``moepot route`` end to end on tiny protocol datasets, and routing recorded from the real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import write_decay_dataset

import moepot
from moepot.analysis.cli import default_quickstart_data_root
from moepot.analysis.routing import collect_routing
from moepot.cli import main
from moepot.models.registry import save_pretrained

FIXTURES = Path(__file__).parents[2] / ".." / "shared" / "fixtures"


@pytest.mark.skipif(not (FIXTURES / "moepot_ref_a_case.pt").is_file(), reason="reference fixtures not present")
def test_collect_routing_reproduces_the_original_codes_topk():
    """The record holds what the original MoE-POT chose for the fixture inputs (eval mode)."""
    model = moepot.load_pretrained(FIXTURES / "moepot_ref_a.pth")
    case = torch.load(FIXTURES / "moepot_ref_a_case.pt", weights_only=True)
    batch = (case["input"], torch.zeros(len(case["input"]), dtype=torch.long))
    record = collect_routing(model, [batch], names=["fixture"], progress=False)
    expected_indices = case["eval_topk_indices"].permute(1, 0, 2).numpy()  # [L, B, k] -> [B, L, k]
    expected_weights = case["eval_topk_weights"].permute(1, 0, 2).numpy()
    np.testing.assert_array_equal(record.indices, expected_indices)
    np.testing.assert_allclose(record.weights, expected_weights, rtol=1e-5, atol=1e-7)


def tiny_moepot_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = moepot.build_model(
        "moepot", img_size=16, patch_size=4, in_channels=1, out_channels=1, in_timesteps=4,
        embed_dim=16, depth=2, n_blocks=2, modes=4, out_layer_dim=8, n_cls=2,
    )
    return save_pretrained(model.eval(), path)


def test_route_command_writes_report_and_json(tmp_path, capsys):
    for name, rate in (("decay_slow", 0.95), ("decay_fast", 0.5)):
        write_decay_dataset(tmp_path / "data", name, n_test=10, size=16, t_total=8, t_in=4, rate=rate)
    checkpoint = tiny_moepot_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "route"
    argv = ["route", "--checkpoint", str(checkpoint), "--data", "decay_slow", "decay_fast",
            "--data-root", str(tmp_path / "data"), "--n-samples", "8", "--out", str(out), "--folds", "4",
            "--device", "cpu"]
    assert main(argv + ["--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "routing.json").read_text())
    assert printed == saved
    assert saved["datasets"] == ["decay_slow", "decay_fast"] and saved["n_samples"] == [8, 8]
    confusion = np.array(saved["classification"]["confusion"])
    assert confusion.shape == (2, 2) and confusion.sum() == 16
    assert saved["classification"]["accuracy"] == pytest.approx(np.trace(confusion) / 16)
    # the selections-only classifier beside it, on the same 16 samples, and the verdict from it
    selections = saved["selection_classification"]
    assert np.array(selections["confusion"]).sum() == 16
    assert selections["accuracy"] == pytest.approx(np.trace(selections["confusion"]) / 16)
    assert saved["verdict"]
    assert len(saved["usage_entropy_bits"]) == 2  # depth 2
    for name in ("report.md", "report.html", "routing_usage.png", "routing_confusion.png", "routing_entropy.png"):
        assert (out / name).is_file()

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {selections['accuracy']:.3f} from the chosen experts alone" in printed
    assert f"{saved['classification']['accuracy']:.3f} from the weighted routing vectors" in printed
    assert saved["verdict"] in printed
    report = (out / "report.md").read_text()
    assert "selections only" in report and saved["verdict"] in report
    assert (out / "routing_confusion_selections.png").is_file()

    # Data read on another grid are resized to the model's, as in evaluation.
    assert main(argv + ["--res", "24", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == [8, 8]


def test_route_command_reports_a_dense_checkpoint_as_an_error(tmp_path, capsys):
    write_decay_dataset(tmp_path / "data", "decay", n_test=4, size=16, t_in=4)
    dense = moepot.build_model("dpot", img_size=16, patch_size=4, in_channels=1, out_channels=1, in_timesteps=4,
                               embed_dim=16, depth=1, n_blocks=2, modes=4, out_layer_dim=8)
    path = save_pretrained(dense, tmp_path / "dense.safetensors")
    code = main(["route", "--checkpoint", str(path), "--data", "decay", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "dense model has no router" in capsys.readouterr().err


def test_route_out_that_is_a_file_is_refused_before_the_model_runs(tmp_path, capsys):
    blocker = tmp_path / "catalog.yaml"
    blocker.write_text("x")
    for out in (blocker, blocker / "route"):
        with pytest.raises(SystemExit) as exit_:  # argparse: the checkpoint is never read
            main(["route", "--checkpoint", str(tmp_path / "none.pt"), "--data", "a", "b", "--out", str(out)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out:" in err and str(blocker) in err and "Traceback" not in err
    assert blocker.read_text() == "x"


def test_route_refuses_one_fold_and_a_dataset_named_twice_before_loading_anything(tmp_path, capsys):
    absent = str(tmp_path / "none.pt")  # never read: the options fail first
    with pytest.raises(SystemExit) as exit_:
        main(["route", "--checkpoint", absent, "--data", "a", "b", "--folds", "1"])
    assert exit_.value.code == 2
    assert "argument --folds: expected at least 2" in capsys.readouterr().err
    # a dataset given twice would be two "classes" of identical samples: a meaningless accuracy
    assert main(["route", "--checkpoint", absent, "--data", "a", "b", "a", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--data names a more than once" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_route_with_one_sample_per_dataset_says_why_there_is_no_accuracy(tmp_path, capsys):
    for name, rate in (("decay_slow", 0.95), ("decay_fast", 0.5)):
        write_decay_dataset(tmp_path / "data", name, n_test=3, size=16, t_total=8, t_in=4, rate=rate)
    checkpoint = tiny_moepot_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "route"
    assert main(["route", "--checkpoint", str(checkpoint), "--data", "decay_slow", "decay_fast",
                 "--data-root", str(tmp_path / "data"), "--n-samples", "1", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" not in printed and "not classified" in printed and "at least 2 samples" in printed
    saved = json.loads((out / "routing.json").read_text())
    assert saved["classification"] is None and "at least 2 samples" in saved["classification_skipped"]
    assert "at least 2 samples" in (out / "report.md").read_text()


def test_quickstart_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOEPOT_CACHE", str(tmp_path / "cache"))
    assert default_quickstart_data_root() == tmp_path / "cache" / "quickstart-data"
    monkeypatch.delenv("MOEPOT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_quickstart_data_root() == tmp_path / "xdg" / "moepot" / "quickstart-data"


def test_route_defaults_are_the_documented_ones_and_method_is_passed_on(tmp_path, capsys):
    """docs/analysis.md: --n-samples defaults to 64, --method to centroid, --folds to 5."""
    for name, rate in (("decay_slow", 0.95), ("decay_fast", 0.5)):
        write_decay_dataset(tmp_path / "data", name, n_test=66, size=16, t_total=8, t_in=4, rate=rate)
    checkpoint = tiny_moepot_checkpoint(tmp_path / "tiny.safetensors")
    argv = ["route", "--checkpoint", str(checkpoint), "--data", "decay_slow", "decay_fast",
            "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "route"), "--device", "cpu", "--json"]
    assert main(argv) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["n_samples"] == [64, 64]
    assert (saved["classification"]["method"], saved["classification"]["folds"]) == ("centroid", 5)
    assert main(argv + ["--n-samples", "6", "--method", "logistic", "--folds", "3"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["n_samples"] == [6, 6]
    assert (saved["classification"]["method"], saved["classification"]["folds"]) == ("logistic", 3)


def test_quickstart_options_and_defaults_reach_run_quickstart(monkeypatch, tmp_path, capsys):
    """Options not given are QuickstartOptions' defaults (8 minutes, cpu, seed 0, runs/quickstart)."""
    import dataclasses
    import types

    import moepot.analysis.quickstart as quickstart

    seen = []
    summary = types.SimpleNamespace(to_dict=lambda: {}, text=lambda: "")
    monkeypatch.setattr(quickstart, "run_quickstart", lambda options: seen.append(options) or summary)
    monkeypatch.setenv("MOEPOT_CACHE", str(tmp_path / "cache"))
    assert main(["quickstart"]) == 0
    defaults = {f.name: f.default for f in dataclasses.fields(quickstart.QuickstartOptions)}
    for key in ("out", "minutes", "device", "seed"):
        assert getattr(seen[0], key) == defaults[key], key
    assert main(["quickstart", "--minutes", "2.5", "--seed", "3", "--out", str(tmp_path / "q"),
                 "--data-root", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert (seen[1].minutes, seen[1].seed, seen[1].out, seen[1].data_root) == (2.5, 3, tmp_path / "q", tmp_path / "d")

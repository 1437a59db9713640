"""Report rendering (Markdown + self-contained HTML) and the figures that go into it."""

from __future__ import annotations

import base64
import json
import re
import sys

import numpy as np
import pytest

from moepot.analysis import figures, sections
from moepot.analysis.report import Report
from moepot.analysis.routing import RoutingRecord, analyze_routing
from moepot.errors import ConfigError, DataError

matplotlib_image = pytest.importorskip("matplotlib.image")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib_image.imread(path)  # [H, W, 4] floats


def tiny_analysis(n_per_class: int = 6, n_layers: int = 2):
    """Two datasets routed to disjoint experts (0-3 and 4-7)."""
    labels = np.repeat([0, 1], n_per_class)
    indices = (4 * labels)[:, None, None] + np.broadcast_to(np.arange(4), (1, n_layers, 4))
    weights = np.full(indices.shape, 0.25, np.float32)
    return analyze_routing(RoutingRecord(("alpha", "beta"), labels, indices, weights), folds=3)


def write_metrics(path, losses):
    path.write_text("".join(json.dumps({"step": i + 1, "loss": v, "lr": 1e-3}) + "\n" for i, v in enumerate(losses)))
    return path


def test_report_markdown_and_html_carry_the_same_content(tmp_path):
    png = figures.rollout_figure(np.zeros((8, 8, 3, 1)), np.zeros((8, 8, 3, 1)), tmp_path / "figs" / "r.png")
    report = Report("Results <test>", tmp_path)
    report.heading("Errors")
    report.text("a & b")
    report.table(["dataset", "rel_l2"], [["ns|2d", 0.123456789], ["swe", None]])
    report.figure(png, "a rollout")
    md_path, html_path = report.write()

    markdown = md_path.read_text()
    assert markdown.startswith("# Results <test>")
    assert "| ns\\|2d | 0.1235 |" in markdown  # pipes escaped, floats to 4 significant digits
    assert "| swe | – |" in markdown
    assert "![a rollout](figs/r.png)" in markdown

    page = html_path.read_text()
    assert "<title>Results &lt;test&gt;</title>" in page and "<p>a &amp; b</p>" in page
    assert "<td>0.1235</td>" in page
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [png.read_bytes()]  # the exact PNG, inline
    assert "figs/r.png" not in page.replace('alt="', "")  # no external link needed... except alt text


def test_report_rejects_figures_outside_its_directory_and_ragged_tables(tmp_path):
    report = Report("x", tmp_path / "report")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(PNG_SIGNATURE)
    with pytest.raises(ConfigError, match="not inside the report directory"):
        report.figure(outside)
    with pytest.raises(ConfigError, match="2 cells for 3 columns"):
        report.table(["a", "b", "c"], [[1, 2]])


def test_results_table_lists_both_models_per_dataset_and_their_mean(tmp_path):
    report = Report("x", tmp_path)
    results = {
        "MoE-POT": {"a": {"rel_l2_step": 0.1, "rel_l2_rollout": 0.2}, "b": {"rel_l2_step": 0.3, "rel_l2_rollout": 0.6}},
        "DPOT": {"a": {"rel_l2_step": 0.5, "rel_l2_rollout": 1.0}, "b": {"rel_l2_step": 0.7, "rel_l2_rollout": 1.2}},
    }
    sections.results_table(report, results)
    markdown = report.to_markdown()
    assert "| dataset | MoE-POT rel_l2_step | DPOT rel_l2_step | MoE-POT rel_l2_rollout | DPOT rel_l2_rollout |" in markdown
    assert "| a | 0.1 | 0.5 | 0.2 | 1 |" in markdown
    assert "| mean | 0.2 | 0.6 | 0.4 | 1.1 |" in markdown


def test_routing_section_writes_all_figures(tmp_path):
    report = Report("routing", tmp_path)
    sections.routing_section(report, tiny_analysis())
    report.write()
    for name in ("routing_confusion.png", "routing_usage.png", "routing_entropy.png"):
        image = read_png(tmp_path / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
    markdown = (tmp_path / "report.md").read_text()
    assert "accuracy 1.000" in markdown and "can be read off" in markdown


def test_routing_section_says_chance_when_routing_is_uninformative(tmp_path):
    n = 40
    labels = np.arange(n) % 2
    record = RoutingRecord(("a", "b"), labels, np.broadcast_to(np.arange(4), (n, 1, 4)).copy(),
                           np.full((n, 1, 4), 0.25, np.float32))
    report = Report("routing", tmp_path)
    sections.routing_section(report, analyze_routing(record))
    assert "no better than chance" in report.to_markdown()


def test_rollout_figure_shows_zero_error_for_a_perfect_prediction(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((16, 12, 5, 2)).astype(np.float32)
    perfect = read_png(figures.rollout_figure(truth, truth.copy(), tmp_path / "perfect.png", steps=[0, 4]))
    noisy = read_png(figures.rollout_figure(truth, truth + 1.0, tmp_path / "noisy.png", steps=[0, 4]))
    assert perfect.shape == noisy.shape
    # The truth and prediction rows are equal in both; only the error row (bottom third) differs.
    height = perfect.shape[0]
    assert not np.array_equal(perfect[2 * height // 3 :], noisy[2 * height // 3 :])


def test_rollout_figure_rejects_bad_shapes_and_steps(tmp_path):
    with pytest.raises(DataError, match=r"\[X, Y, T, C\]"):
        figures.rollout_figure(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="steps"):
        figures.rollout_figure(np.zeros((4, 4, 3, 1)), np.zeros((4, 4, 3, 1)), tmp_path / "x.png", steps=[3])
    with pytest.raises(ConfigError, match="channel 1"):
        figures.rollout_figure(np.zeros((4, 4, 3, 1)), np.zeros((4, 4, 3, 1)), tmp_path / "x.png", channel=1)


def test_training_curves_from_metrics_files(tmp_path):
    a = write_metrics(tmp_path / "a.jsonl", [1.0, 0.5, 0.25])
    b = write_metrics(tmp_path / "b.jsonl", [2.0, 1.0, 0.9])
    image = read_png(figures.training_curves({"moe": a, "dense": b}, tmp_path / "curves.png"))
    assert image.shape[1] > 200


def test_curve_keys_keep_losses_and_errors_not_bookkeeping():
    records = [{"step": 1, "epoch": 0, "lr": 1e-3, "time": 3.0, "train_loss": 1.0, "test_rel_l2": 0.5, "name": "x"}]
    assert figures.curve_keys(records) == ["test_rel_l2", "train_loss"]
    assert figures.curve_keys([{"step": 1, "accuracy": 0.5}]) == ["accuracy"]


def test_read_metrics_names_the_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n\n{"step": 2, "loss": \n')
    with pytest.raises(DataError, match=r"metrics.jsonl, line 3"):
        figures.read_metrics(path)
    with pytest.raises(DataError, match="cannot read"):
        figures.read_metrics(tmp_path / "missing.jsonl")


def test_curve_values_average_the_loops_per_dataset_metrics():
    """The training loop's record: {"step", "epoch", "time", "metrics": {dataset: {metric: v}}}."""
    record = {"step": 10, "epoch": 1, "time": 2.0,
              "metrics": {"a": {"rel_l2_step": 0.2, "rel_l2_rollout": 0.4},
                          "b": {"rel_l2_step": 0.4, "rel_l2_rollout": 0.8}}}
    values = figures.curve_values(record)
    assert values["mean rel_l2_step"] == pytest.approx(0.3)
    assert values["mean rel_l2_rollout"] == pytest.approx(0.6)
    assert values["metrics/b/rel_l2_rollout"] == 0.8
    assert figures.curve_keys([record]) == ["mean rel_l2_rollout", "mean rel_l2_step"]


def test_figures_without_matplotlib_say_how_to_install_it(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"moepot\[analysis\]"):
        figures.rollout_figure(np.zeros((4, 4, 2, 1)), np.zeros((4, 4, 2, 1)), tmp_path / "x.png")


def test_a_diverged_rollout_keeps_the_scale_of_its_finite_frames(tmp_path):
    """NaN / inf in the prediction (a diverged rollout) must not blank the truth row or flatten the
    error row's scale: the colour limits are those of the finite values."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((16, 12, 5)).astype(np.float32)
    prediction = truth + 0.1 * rng.standard_normal(truth.shape).astype(np.float32)
    diverged = prediction.copy()
    diverged[:, :, 3:] = np.nan
    diverged[0, 0, 2] = np.inf
    (low, high), error_max = figures.colour_limits(truth, diverged)
    finite = np.concatenate([truth.ravel(), diverged[np.isfinite(diverged)]])
    assert (low, high) == pytest.approx(tuple(np.percentile(finite, [1, 99])))
    error = np.abs(diverged - truth)
    assert error_max == pytest.approx(float(error[np.isfinite(error)].max()))
    png = figures.rollout_figure(truth[..., None], diverged[..., None], tmp_path / "diverged.png")
    assert read_png(png).shape[0] > 0


def test_curve_means_are_not_taken_over_the_finite_datasets_only():
    record = {"step": 1, "metrics": {"a": {"rel_l2_rollout": 1.0}, "b": {"rel_l2_rollout": float("inf")}}}
    assert "mean rel_l2_rollout" not in figures.curve_values(record)  # a gap in the curve, not 1.0

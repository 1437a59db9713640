"""Report rendering (Markdown + self-contained HTML) and the figures that go into it."""

from __future__ import annotations

import base64
import json
import re
import sys
from html.parser import HTMLParser

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


class _Page(HTMLParser):
    """The tags, attributes and text of an HTML page, as the standard library's parser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.setdefault(tag, dict(attrs))
        if tag not in ("meta", "img"):
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self.text.setdefault(self._open[-1], []).append(data)


def test_html_shows_every_text_verbatim_and_injects_no_markup(tmp_path):
    """Text with HTML syntax in it (dataset names, logs, captions) is shown as written: a browser's
    parser (here html.parser) finds exactly the report's own elements, and each holds the text given."""
    png = figures.rollout_figure(np.zeros((4, 4, 2, 1)), np.zeros((4, 4, 2, 1)), tmp_path / "r.png")
    hostile = {
        "heading": "<b>Errors</b> & \"more\"",
        "text": "<script>alert('p')</script>",
        "code": "if a < b && c > d: print('<pre>')",
        "header": "</th><th>extra",
        "cell": "<i>ns2d</i> & co",
        "caption": 'x" onerror="alert(1) <b>bold</b>',
    }
    report = Report("T <&>", tmp_path)
    report.heading(hostile["heading"])
    report.text(hostile["text"])
    report.code(hostile["code"])
    report.table(["dataset", hostile["header"]], [[hostile["cell"], 0.5]])
    report.figure(png, hostile["caption"])
    page = _Page()
    page.feed(report.to_html())
    assert page.tags == ["html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "pre", "table", "thead", "tr",
                         "th", "th", "tbody", "tr", "td", "td", "figure", "img", "figcaption"]  # fmt: skip
    assert "".join(page.text["title"]) == "".join(page.text["h1"]) == "T <&>"
    assert "".join(page.text["h2"]) == hostile["heading"]
    assert "".join(page.text["p"]) == hostile["text"]
    assert "".join(page.text["pre"]) == hostile["code"]
    assert page.text["th"] == ["dataset", hostile["header"]]
    assert page.text["td"] == [hostile["cell"], "0.5"]
    assert "".join(page.text["figcaption"]) == hostile["caption"]
    assert set(page.attrs["img"]) == {"src", "alt"} and page.attrs["img"]["alt"] == hostile["caption"]


def markdown_cells(line: str) -> list[str]:
    """Cells of a Markdown table row: split at the pipes that are not escaped, outer ones dropped."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_markdown_table_keeps_one_line_per_row_and_its_columns(tmp_path):
    report = Report("x", tmp_path)
    report.table(["dataset", "a|b"], [["ns|2d", "line one\nline two"], ["swe", 1.0]])
    lines = [line for line in report.to_markdown().splitlines() if line.startswith("|")]
    assert len(lines) == 4  # header, rule, two rows
    assert [len(markdown_cells(line)) for line in lines] == [2, 2, 2, 2]
    assert markdown_cells(lines[0]) == ["dataset", "a\\|b"]
    assert markdown_cells(lines[2]) == ["ns\\|2d", "line one line two"]


def test_report_write_leaves_the_previous_files_when_interrupted(tmp_path, monkeypatch):
    """A write killed half way (here: a write_text that stops after half the text) leaves the
    previous report.md whole: readers see the old report or the new one, never a torn file."""
    from pathlib import Path

    report = Report("first", tmp_path)
    report.text("the first version")
    md_path, _ = report.write()
    before = md_path.read_text()
    original = Path.write_text

    def torn_write(self: Path, text: str, *args, **kwargs) -> int:
        original(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", torn_write)
    second = Report("second", tmp_path)
    second.text("the second version, " * 50)
    with pytest.raises(KeyboardInterrupt):
        second.write()
    monkeypatch.undo()
    assert md_path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]  # no temporary left


def test_a_figure_save_that_fails_half_way_keeps_the_previous_png(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = figures.rollout_figure(np.zeros((4, 4, 2, 1)), np.ones((4, 4, 2, 1)), tmp_path / "r.png")
    before = path.read_bytes()

    def torn_savefig(self: Figure, fname, *args, **kwargs) -> None:
        with open(fname, "wb") as fh:
            fh.write(PNG_SIGNATURE + b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", torn_savefig)
    with pytest.raises(OSError, match="disk full"):
        figures.rollout_figure(np.zeros((4, 4, 2, 1)), np.zeros((4, 4, 2, 1)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_confusion_figure_colours_each_cell_by_its_share_of_the_true_dataset(tmp_path, monkeypatch):
    """Rows are true datasets: a cell's colour is its count over its row's total (the shares of
    a row sum to 1), not over its column."""
    from matplotlib.axes import Axes

    from moepot.analysis.routing import ClassificationResult

    drawn: list[np.ndarray] = []
    original = Axes.imshow

    def recording_imshow(self: Axes, values, *args, **kwargs):
        drawn.append(np.asarray(values))
        return original(self, values, *args, **kwargs)

    monkeypatch.setattr(Axes, "imshow", recording_imshow)
    result = ClassificationResult("centroid", 2, 0.9, 0.6, np.array([[3, 1], [0, 6]]), (0.9, 0.9))
    figures.confusion_figure(tiny_analysis(), tmp_path / "c.png", result)
    np.testing.assert_allclose(drawn[0], [[0.75, 0.25], [0.0, 1.0]])


def weights_only_analysis():
    """Both datasets choose experts 0-3 everywhere; "peaked" weighs them 0.7/0.1/0.1/0.1, "flat" 0.25
    each. From the selections alone every vector is the same (the centroid classifier's ties go to
    the first class: accuracy 0.5 = chance); from the weights they separate perfectly (1.0)."""
    labels = np.repeat([0, 1], 10)
    indices = np.broadcast_to(np.arange(4), (20, 2, 4)).copy()
    weights = np.where(labels[:, None, None] == 0, np.array([0.7, 0.1, 0.1, 0.1]), 0.25) + np.zeros(indices.shape)
    return analyze_routing(RoutingRecord(("peaked", "flat"), labels, indices, weights.astype(np.float32)), folds=5)


def test_routing_section_reports_each_classifier_under_its_own_name(tmp_path):
    analysis = weights_only_analysis()
    report = Report("routing", tmp_path)
    sections.routing_section(report, analysis)
    markdown = report.to_markdown()
    assert "| selections only (0/1) | 0.5 | 0.5 | no |" in markdown
    assert "| weighted (top-k weights) | 1 | 0.5 | yes |" in markdown
    assert "(0/1 selections only) with accuracy 0.500" in markdown
    assert "(selections and their weights) with accuracy 1.000" in markdown
    # each confusion figure is the one of its own classifier (the two differ)
    own = {
        "routing_confusion_selections.png": analysis.selection_classification,
        "routing_confusion.png": analysis.classification,
    }
    for name, result in own.items():
        drawn_alone = read_png(figures.confusion_figure(analysis, tmp_path / "alone" / name, result))
        np.testing.assert_array_equal(read_png(tmp_path / name), drawn_alone)
    assert not np.array_equal(read_png(tmp_path / "routing_confusion.png"),
                              read_png(tmp_path / "routing_confusion_selections.png"))


def test_results_table_leaves_a_missing_result_blank_and_out_of_the_mean(tmp_path):
    report = Report("x", tmp_path)
    results = {
        "MoE-POT": {"a": {"rel_l2_step": 0.1, "rel_l2_rollout": 0.2}, "b": {"rel_l2_step": 0.3, "rel_l2_rollout": 0.6}},
        "DPOT": {"a": {"rel_l2_step": 0.5, "rel_l2_rollout": 1.0}},
    }
    sections.results_table(report, results)
    markdown = report.to_markdown()
    assert "| b | 0.3 | – | 0.6 | – |" in markdown
    assert "| mean | 0.2 | 0.5 | 0.4 | 1 |" in markdown


def test_rollout_figure_default_steps_run_from_the_first_frame_to_the_last(tmp_path, monkeypatch):
    """7 frames, 4 columns: frames 0, 2, 4, 6 (evenly spaced, both ends included), titled 1-based."""
    from matplotlib.axes import Axes

    titles: list[str] = []
    original = Axes.set_title

    def recording_set_title(self: Axes, label: str, *args, **kwargs):
        titles.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_title", recording_set_title)
    frames = np.zeros((4, 4, 7, 1))
    figures.rollout_figure(frames, frames, tmp_path / "r.png", n_steps=4)
    assert titles == ["step 1", "step 3", "step 5", "step 7"]

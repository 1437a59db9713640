"""Figures of the analysis report, written as PNG files with matplotlib.

matplotlib is the optional extra ``analysis``; it is imported inside each function, so the core
package works without it (a missing install raises :class:`moepot.errors.ConfigError` saying
how to get it). Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas, never through pyplot's global state, and saved atomically.

Each function writes one PNG and returns its path:

- :func:`usage_heatmaps`: per MoE layer, dataset x expert selection frequency and mean weight;
- :func:`confusion_figure`: the router classifier's confusion matrix;
- :func:`entropy_figure`: expert-usage entropy per layer;
- :func:`training_curves`: loss / error curves of one or more runs from their ``metrics.jsonl``;
- :func:`rollout_figure`: truth, prediction and error of one trajectory at several steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moepot.errors import ConfigError, DataError
from moepot.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from moepot.analysis.routing import ClassificationResult, RoutingAnalysis

logger = logging.getLogger(__name__)

DPI = 100
STEP_KEYS = ("step", "global_step", "iteration", "epoch")  # x axis of training curves, first found


def new_figure(width: float, height: float) -> Figure:
    """A blank figure on the Agg canvas (no pyplot, no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            "figures need matplotlib, the optional extra 'analysis': pip install 'moepot[analysis]'"
        ) from exc
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` to ``path`` as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


# --------------------------------------------------------------------------- router figures


def usage_heatmaps(analysis: RoutingAnalysis, path: str | os.PathLike) -> Path:
    """Per layer (rows), two dataset x expert heatmaps: selection frequency and mean weight.

    Frequency is the fraction of a dataset's samples that put the expert in their top-k;
    mean weight is the average weight it gets (0 when not selected).
    """
    n_layers, n_datasets, n_experts = analysis.frequency.shape
    figure = new_figure(12, 0.6 + n_layers * (0.9 + 0.3 * n_datasets))
    axes = figure.subplots(n_layers, 2, squeeze=False)
    panels = (("selection frequency", analysis.frequency, "Blues"), ("mean weight", analysis.mean_weight, "Oranges"))
    for layer in range(n_layers):
        for column, (what, values, cmap) in enumerate(panels):
            ax = axes[layer, column]
            image = ax.imshow(np.ma.masked_invalid(values[layer]), aspect="auto", cmap=cmap, vmin=0.0,
                              vmax=max(float(np.nanmax(values[layer], initial=0.0)), 1e-6))
            ax.set_title(f"layer {layer}: {what}", fontsize=10)
            ax.set_yticks(range(n_datasets), labels=analysis.names, fontsize=8)
            ax.set_xticks(range(n_experts), labels=[str(e) for e in range(n_experts)], fontsize=7)
            if layer == n_layers - 1:
                ax.set_xlabel("expert")
            figure.colorbar(image, ax=ax, shrink=0.9)
    return save_figure(figure, path)


def confusion_figure(
    analysis: RoutingAnalysis, path: str | os.PathLike, result: ClassificationResult | None = None
) -> Path:
    """The cross-validated confusion matrix (counts, coloured by row share), with accuracy vs chance.

    ``result`` is one of the analysis's classifications (default ``analysis.classification``, the
    weighted one; pass ``analysis.selection_classification`` for the selections-only one).
    """
    result = analysis.classification if result is None else result
    if result is None:
        raise DataError(f"confusion_figure: the analysis has no classification ({analysis.classification_skipped})")
    counts = result.confusion
    n = len(analysis.names)
    row_share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = new_figure(2.5 + 0.7 * n, 2.0 + 0.6 * n)
    ax = figure.subplots()
    image = ax.imshow(row_share, cmap="Greens", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if row_share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), labels=analysis.names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=analysis.names, fontsize=8)
    ax.set_xlabel("predicted dataset")
    ax.set_ylabel("true dataset")
    vectors = "selections only" if result is analysis.selection_classification else "weighted routing"
    ax.set_title(f"{vectors}, {result.method}, {result.folds}-fold: accuracy {result.accuracy:.2f} "
                 f"(chance {result.chance:.2f})", fontsize=10)
    figure.colorbar(image, ax=ax, label="share of the true dataset")
    return save_figure(figure, path)


def entropy_figure(analysis: RoutingAnalysis, path: str | os.PathLike, top_k: int = 4) -> Path:
    """Expert-usage entropy per layer, between the floor log2(k) and the ceiling log2(E)."""
    n_experts = analysis.frequency.shape[2]
    entropy = analysis.entropy
    figure = new_figure(1.8 + 0.6 * len(entropy), 3.2)
    ax = figure.subplots()
    ax.bar(range(len(entropy)), entropy, color="tab:purple")
    ax.axhline(math.log2(n_experts), ls="--", color="gray", label=f"uniform over {n_experts} experts")
    ax.axhline(math.log2(top_k), ls=":", color="gray", label=f"always the same {top_k}")
    ax.set_xticks(range(len(entropy)))
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("usage entropy (bits)")
    ax.set_ylim(0, math.log2(n_experts) * 1.2)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(figure, path)


# --------------------------------------------------------------------------- training curves


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (one JSON object per line; blank lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read training metrics {path}: {exc}") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not a JSON object ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_values(record: dict) -> dict[str, float]:
    """The plottable numbers of one metrics record, by name.

    Nested objects are flattened with ``/`` (``{"train": {"loss": 1}}`` -> ``train/loss``). The
    per-dataset evaluation block of the training loop, ``"metrics": {dataset: {metric: v}}``,
    also gives ``mean <metric>``: the mean over the datasets present in that record.
    """
    values: dict[str, float] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            elif _is_number(value):
                values[f"{prefix}{key}"] = float(value)

    walk(record, "")
    per_dataset = record.get("metrics")
    if isinstance(per_dataset, dict):
        by_metric: dict[str, list[float]] = {}
        for metrics in per_dataset.values():
            for name, value in (metrics.items() if isinstance(metrics, dict) else ()):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    by_metric.setdefault(name, []).append(float(value))
        # the mean over every dataset, as in the results table: a non-finite error makes it
        # non-finite (left out of the plot, a gap) rather than silently dropping that dataset
        means = {f"mean {name}": float(np.mean(v)) for name, v in by_metric.items()}
        values.update({key: mean for key, mean in means.items() if math.isfinite(mean)})
    return values


def curve_keys(records: Sequence[dict]) -> list[str]:
    """Metric names worth plotting: losses and relative L2 errors, else every numeric value.

    The step counter, bookkeeping (learning rate, time) and per-dataset entries of the
    ``metrics`` block (their ``mean ...`` is kept) are left out.
    """
    names = sorted({k for r in records for k in curve_values(r)})
    names = [
        k for k in names
        if k not in STEP_KEYS and k not in ("lr", "time", "elapsed", "wall_s") and not k.startswith("metrics/")
    ]
    wanted = [k for k in names if "loss" in k.lower() or "rel_l2" in k.lower()]
    return wanted or names


def training_curves(
    runs: Mapping[str, str | os.PathLike],
    path: str | os.PathLike,
    keys: Sequence[str] | None = None,
    losses: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """One panel per metric, one line per run, from each run's ``metrics.jsonl``.

    Args:
        runs: label -> path of a ``metrics.jsonl`` (one JSON object per line; the x axis is the
            first of ``step``, ``global_step``, ``iteration``, ``epoch`` present, else the line
            number). A missing file counts as no records.
        path: output PNG.
        keys: names (see :func:`curve_values`) to plot; default :func:`curve_keys` of all runs.
        losses: label -> training loss per optimizer step, drawn in a first panel (raw, faint,
            and a running mean over ~5% of the steps).
    """
    records = {label: read_metrics(p) if Path(p).is_file() else [] for label, p in runs.items()}
    all_records = [r for rs in records.values() for r in rs]
    keys = list(keys) if keys is not None else curve_keys(all_records)
    losses = {label: list(v) for label, v in (losses or {}).items() if len(v)}
    if not keys and not losses:
        raise DataError(f"training_curves: no numeric metrics in {[str(p) for p in runs.values()]}")
    x_label = next((k for k in STEP_KEYS if any(k in r for r in all_records)), "record")
    n_panels = len(keys) + bool(losses)
    n_cols = min(n_panels, 3)
    n_rows = math.ceil(n_panels / n_cols)
    figure = new_figure(4.2 * n_cols, 3.2 * n_rows)
    axes = list(figure.subplots(n_rows, n_cols, squeeze=False).ravel())
    if losses:
        _loss_panel(axes[0], losses)
    for ax, key in zip(axes[bool(losses):], keys):
        for label, rows in records.items():
            points = [(_step(r, i), v[key]) for i, r in enumerate(rows) if key in (v := curve_values(r))]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=label, marker="." if len(points) < 30 else None)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(x_label)
        if ax.lines and all(v > 0 for line in ax.lines for v in line.get_ydata()):
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return save_figure(figure, path)


def _loss_panel(ax, losses: Mapping[str, Sequence[float]]) -> None:
    for index, (label, values) in enumerate(losses.items()):
        values = np.asarray(values, dtype=np.float64)
        steps = np.arange(1, len(values) + 1)
        window = max(len(values) // 20, 1)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        color = f"C{index}"
        ax.plot(steps, values, color=color, alpha=0.25, lw=0.8)
        ax.plot(steps[window - 1 :], smooth, color=color, label=label)
    ax.set_title("training loss", fontsize=10)
    ax.set_xlabel("step")
    if all(v > 0 for values in losses.values() for v in values):
        ax.set_yscale("log")
    ax.legend(fontsize=8)


def _step(record: dict, line: int) -> float:
    return next((record[k] for k in STEP_KEYS if _is_number(record.get(k))), line)


# --------------------------------------------------------------------------- rollouts


def colour_limits(truth: np.ndarray, prediction: np.ndarray) -> tuple[tuple[float, float], float]:
    """``((low, high), error_max)`` of :func:`rollout_figure`: one scale for truth and prediction
    (their 1st-99th percentile) and the top of the |error| scale, from the finite values only, so a
    diverged rollout's NaN / inf pixels stay blank and the rest keeps its scale."""
    both = np.stack([truth, prediction])
    finite = both[np.isfinite(both)]
    low, high = (float(v) for v in np.percentile(finite, [1, 99])) if finite.size else (0.0, 1.0)
    error = np.abs(prediction - truth)
    finite_error = error[np.isfinite(error)]
    return (low, high), (max(float(finite_error.max()), 1e-12) if finite_error.size else 1.0)


def rollout_figure(
    truth: np.ndarray,
    prediction: np.ndarray,
    path: str | os.PathLike,
    *,
    steps: Sequence[int] | None = None,
    channel: int = 0,
    title: str = "",
    n_steps: int = 4,
) -> Path:
    """Truth, prediction and absolute error of one trajectory (rows) at several steps (columns).

    Args:
        truth: ``[X, Y, T, C]`` reference frames (array or tensor).
        prediction: ``[X, Y, T, C]`` predicted frames, same shape.
        path: output PNG.
        steps: frame indices to show; default ``n_steps`` evenly spaced from the first to the last.
        channel: which channel to show.
        title: figure title (e.g. the dataset and model).
    """
    truth, prediction = _as_numpy(truth), _as_numpy(prediction)
    if truth.shape != prediction.shape or truth.ndim != 4:
        raise DataError(
            f"rollout_figure: expected truth and prediction [X, Y, T, C] of the same shape; "
            f"got {truth.shape} and {prediction.shape}"
        )
    n_frames, n_channels = truth.shape[2], truth.shape[3]
    if not 0 <= channel < n_channels:
        raise ConfigError(f"rollout_figure: channel {channel} out of range [0, {n_channels})")
    if steps is None:
        steps = sorted({round(s) for s in np.linspace(0, n_frames - 1, min(n_steps, n_frames))})
    if any(not 0 <= s < n_frames for s in steps):
        raise ConfigError(f"rollout_figure: steps {list(steps)} outside [0, {n_frames})")

    truth, prediction = truth[..., channel], prediction[..., channel]
    error = np.abs(prediction - truth)
    (low, high), error_max = colour_limits(truth, prediction)
    n_bad = int(np.size(truth) + np.size(prediction) - np.isfinite(truth).sum() - np.isfinite(prediction).sum())
    if n_bad:
        title = f"{title or 'rollout'} ({n_bad} non-finite values, blank)"
    figure = new_figure(2.3 * len(steps) + 1.0, 6.6)
    figure.suptitle(title or "rollout", fontsize=11)
    axes = figure.subplots(3, len(steps), squeeze=False)
    rows = (("truth", truth, "viridis", low, high), ("prediction", prediction, "viridis", low, high),
            ("|error|", error, "magma", 0.0, error_max))
    for r, (label, frames, cmap, vmin, vmax) in enumerate(rows):
        for c, step in enumerate(steps):
            ax = axes[r, c]
            # x across, y up (the field is stored [X, Y])
            image = ax.imshow(frames[:, :, step].T, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {step + 1}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label)
        figure.colorbar(image, ax=axes[r, :].tolist(), shrink=0.85)
    return save_figure(figure, path)


def _as_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float32)

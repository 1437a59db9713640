"""Report sections shared by ``moepot route`` and ``moepot quickstart``.

Each function draws the figures of one part of the analysis into the report directory and
appends the matching headings, tables and figures to a :class:`~moepot.analysis.report.Report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from moepot.analysis import figures
from moepot.analysis.report import Report
from moepot.analysis.routing import RoutingAnalysis

METRICS = ("rel_l2_step", "rel_l2_rollout")


def routing_section(report: Report, analysis: RoutingAnalysis, *, top_k: int = 4, prefix: str = "") -> None:
    """Router interpretability: classifier accuracy and confusion, usage heatmaps, entropy per layer."""
    out = report.directory
    n_experts = analysis.frequency.shape[2]
    report.heading("Router interpretability")
    samples = ", ".join(f"{name} {n}" for name, n in zip(analysis.names, analysis.n_samples))
    report.text(
        f"Routing decisions of every MoE layer on test samples ({samples}). Each sample's routing "
        f"vector holds, for every layer, the top-{top_k} weights scattered onto the {n_experts} experts "
        f"(weighted) or only which {top_k} experts were chosen (selections, 0/1); the verdict follows the "
        f"selections, since the question is which experts the router chooses."
    )
    selections, weighted = analysis.selection_classification, analysis.classification
    if selections is not None and weighted is not None:
        report.heading("Dataset classification from routing vectors", 3)
        report.text(
            f"A {selections.method} classifier ({selections.folds}-fold stratified cross-validation) predicts "
            f"the dataset from which experts each layer chose (0/1 selections only) with accuracy "
            f"{selections.accuracy:.3f}, and from the weighted routing vectors (selections and their weights) "
            f"with accuracy {weighted.accuracy:.3f}; always guessing the largest dataset gives "
            f"{selections.chance:.3f} — {analysis.verdict}."
        )
        report.table(
            ["routing vector", "accuracy", "chance", "above chance"],
            [[label, result.accuracy, result.chance, "yes" if result.above_chance else "no"]
             for label, result in (("selections only (0/1)", selections), ("weighted (top-k weights)", weighted))],
        )
        report.figure(figures.confusion_figure(analysis, out / f"{prefix}routing_confusion_selections.png",
                                               selections),
                      "Confusion matrix of the selections-only classifier (rows: true dataset, columns: predicted).")
        report.figure(figures.confusion_figure(analysis, out / f"{prefix}routing_confusion.png", weighted),
                      "Confusion matrix of the weighted classifier (rows: true dataset, columns: predicted).")
    elif analysis.classification_skipped:
        report.heading("Dataset classification from routing vectors", 3)
        report.text(f"Not computed: {analysis.classification_skipped}.")
    report.heading("Expert usage per layer", 3)
    report.figure(figures.usage_heatmaps(analysis, out / f"{prefix}routing_usage.png"),
                  "Left: share of each dataset's samples that select the expert. "
                  "Right: mean routing weight the expert receives.")
    report.heading("Expert-usage entropy", 3)
    report.table(
        ["layer", "entropy (bits)", f"max log2({n_experts})"],
        [[layer, float(h), float(np.log2(n_experts))] for layer, h in enumerate(analysis.entropy)],
    )
    report.figure(figures.entropy_figure(analysis, out / f"{prefix}routing_entropy.png", top_k=top_k),
                  f"Entropy of the expert-selection distribution, between log2({top_k}) and log2({n_experts}).")


def results_table(report: Report, results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
    """Per-dataset ``rel_l2_step`` and ``rel_l2_rollout`` of several models, side by side, plus their means.

    Args:
        results: model label -> dataset -> {metric: value}.
    """
    models = list(results)
    datasets = list(dict.fromkeys(d for per_model in results.values() for d in per_model))
    header = ["dataset"] + [f"{model} {metric}" for metric in METRICS for model in models]
    rows: list[list] = []
    for dataset in datasets:
        rows.append([dataset] + [results[m].get(dataset, {}).get(metric) for metric in METRICS for m in models])
    means = []
    for metric in METRICS:
        for model in models:
            values = [results[model][d][metric] for d in datasets if metric in results[model].get(d, {})]
            means.append(float(np.mean(values)) if values else None)
    rows.append(["mean"] + means)
    report.table(header, rows)


def rollout_figures(
    report: Report,
    rollouts: Mapping[str, Mapping[str, np.ndarray]],
    truths: Mapping[str, np.ndarray],
    *,
    steps: Sequence[int] | None = None,
) -> None:
    """One figure per dataset and model: truth, prediction and error at several steps.

    Args:
        rollouts: dataset -> model label -> predicted trajectory ``[X, Y, T, C]``.
        truths: dataset -> true trajectory ``[X, Y, T, C]``.
    """
    for dataset, per_model in rollouts.items():
        report.heading(dataset, 3)
        for model, prediction in per_model.items():
            path = figures.rollout_figure(
                truths[dataset], prediction, report.directory / f"rollout_{_slug(dataset)}_{_slug(model)}.png",
                steps=steps, title=f"{dataset}: {model} (channel 0)",
            )
            report.figure(path, f"{model} on {dataset}: truth, prediction and |error| at several rollout steps.")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)

"""``moepot route`` (router interpretability of a checkpoint) and ``moepot quickstart``.

``route`` loads a MoE-POT checkpoint, records the routing decisions on test samples of the
given datasets and writes a report (usage heatmaps, dataset classifier, entropy per layer) plus
``routing.json``; ``quickstart`` runs :func:`moepot.analysis.quickstart.run_quickstart`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from moepot.argtypes import fold_count, output_dir, positive_float, positive_int
from moepot.errors import ConfigError

logger = logging.getLogger(__name__)


def default_quickstart_data_root() -> Path:
    """``$MOEPOT_CACHE/quickstart-data``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` ``/moepot/quickstart-data``."""
    if os.environ.get("MOEPOT_CACHE"):
        return Path(os.environ["MOEPOT_CACHE"]) / "quickstart-data"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "moepot" / "quickstart-data"


def register(subparsers: argparse._SubParsersAction) -> None:
    route = subparsers.add_parser(
        "route",
        help="router interpretability: which experts each dataset uses, and can the router tell them apart",
        description=(
            "Record the top-k routing decisions of every MoE layer on test samples of the given datasets; "
            "write expert-usage heatmaps, the usage entropy per layer and a cross-validated classifier "
            "that predicts the dataset from the chosen experts alone and from the weighted routing vectors "
            "(report.md, report.html, routing.json)."
        ),
    )
    route.add_argument("--checkpoint", required=True,
                       help="MoE-POT checkpoint (ours, a run directory for its last checkpoint, or an official .pth)")
    route.add_argument("--data", nargs="+", required=True, metavar="NAME", help="catalogue dataset names")
    route.add_argument("--data-root", metavar="DIR", help="data root (default $MOEPOT_DATA_ROOT or the current directory)")
    route.add_argument("--catalog", metavar="FILE", help="extra catalogue file")
    route.add_argument("--res", type=positive_int, help="grid the samples are resized to (default the model's)")
    route.add_argument("--n-samples", type=positive_int, default=64,
                       help="test samples per dataset (default 64; fewer if the split is smaller)")
    route.add_argument("--method", choices=("centroid", "logistic"), default="centroid",
                       help="classifier: nearest class centroid (default) or multinomial logistic regression")
    route.add_argument("--folds", type=fold_count, default=5,
                       help="cross-validation folds, at least 2 (default 5; lowered to the number of samples when there are fewer)")
    route.add_argument("--batch-size", type=positive_int, default=16, help="samples per forward (default 16)")
    route.add_argument("--device", help="cpu, cuda, cuda:1 (default: a GPU when available)")
    route.add_argument("--out", default="runs/route", type=output_dir, metavar="DIR", help="report directory (default runs/route)")
    route.add_argument("--json", action="store_true", help="print the analysis as JSON")
    route.set_defaults(func=run_route)

    quick = subparsers.add_parser(
        "quickstart",
        help="from nothing to a report: generate data, pre-train MoE-POT and DPOT, evaluate, analyse",
        description=(
            "Generate (or reuse) the quick suite of the six pre-training datasets, pre-train a small MoE-POT "
            "and a DPOT with the same number of activated parameters under the same budget, evaluate both "
            "zero-shot on every dataset and write a report with errors, curves, rollouts and the router analysis."
        ),
    )
    quick.add_argument("--out", default="runs/quickstart", type=output_dir, metavar="DIR", help="report directory (default runs/quickstart)")
    quick.add_argument("--minutes", type=positive_float, default=8.0,
                       help="total time budget in minutes (default 8; training gets most of it)")
    quick.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--data-root", metavar="DIR",
                       help="cache of the generated data (default $MOEPOT_CACHE/quickstart-data, else "
                            "$XDG_CACHE_HOME/moepot/quickstart-data, else ~/.cache/moepot/quickstart-data)")
    quick.add_argument("--json", action="store_true", help="print the summary as JSON")
    quick.set_defaults(func=run_quickstart_command)


def run_route(args: argparse.Namespace) -> int:
    from moepot.analysis import sections
    from moepot.analysis.report import Report
    from moepot.analysis.routing import analyze_routing, collect_test_routing
    from moepot.io import atomic_path
    from moepot.train.checkpoint import CheckpointManager
    from moepot.train.loop import load_model_for_eval

    repeated = sorted({name for name in args.data if args.data.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"--data names {', '.join(repeated)} more than once; each dataset is one class of the "
            "routing classifier, so give each once"
        )
    checkpoint = CheckpointManager.checkpoint_of(args.checkpoint)  # the file read, for a run directory too
    model = load_model_for_eval(checkpoint, device=args.device)
    if not model.moe_layers():
        raise ConfigError(f"--checkpoint {args.checkpoint}: a dense model has no router to analyse; give a MoE-POT")
    record = collect_test_routing(
        model, args.data, res=args.res, n_samples=args.n_samples, catalog=args.catalog,
        data_root=args.data_root, batch_size=args.batch_size,
    )
    analysis = analyze_routing(record, folds=args.folds, method=args.method)

    out = Path(args.out)
    report = Report(f"Router analysis of {Path(args.checkpoint).resolve().name}", out)  # "." too
    sections.routing_section(report, analysis, top_k=record.top_k)
    md_path, html_path = report.write()
    summary = {"checkpoint": str(checkpoint), "report": str(html_path), **analysis.to_dict()}
    with atomic_path(out / "routing.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))

    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    selections, weighted = analysis.selection_classification, analysis.classification
    if selections is not None and weighted is not None:
        print(f"dataset from routing: accuracy {selections.accuracy:.3f} from the chosen experts alone, "
              f"{weighted.accuracy:.3f} from the weighted routing vectors (chance {selections.chance:.3f}, "
              f"{selections.method}, {selections.folds}-fold): {analysis.verdict}")
    elif analysis.classification_skipped:
        print(f"dataset from routing: not classified ({analysis.classification_skipped})")
    print("usage entropy per layer (bits): " + ", ".join(f"{h:.2f}" for h in analysis.entropy))
    print(f"report: {html_path} (and {md_path.name})")
    return 0


def run_quickstart_command(args: argparse.Namespace) -> int:
    from moepot.analysis.quickstart import QuickstartOptions, run_quickstart

    options = QuickstartOptions(
        out=Path(args.out),
        minutes=args.minutes,
        device=args.device,
        seed=args.seed,
        data_root=Path(args.data_root) if args.data_root else default_quickstart_data_root(),
    )
    summary = run_quickstart(options)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=1))
    else:
        print(summary.text())
    return 0

"""``moepot info NAME_OR_CHECKPOINT_OR_RUN_DIR [--json]``: architecture and parameter counts.

Counts are taken on the meta device (no weights allocated), so even ``moepot info dpot-h`` is
instant; a checkpoint's tensors are not read either, only their shapes. A run directory stands
for its last checkpoint (``checkpoints/last.pt``, as ``--resume`` reads it); a training
checkpoint also shows its step, epoch and datasets.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="architecture summary and parameter counts of a preset or checkpoint",
        description="Print the architecture, the total parameters and the parameters active per "
        "forward (MoE: top_k of the routed experts per layer) of a model preset, a checkpoint file or "
        "a run directory (its last checkpoint, checkpoints/last.pt); a training checkpoint also shows "
        "its step and datasets.",
    )
    parser.add_argument(
        "model",
        metavar="NAME_OR_CHECKPOINT",
        help="a preset (moepot-ti, dpot-m, fno, ...), a checkpoint file or a run directory",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from moepot.models.registry import describe_source

    info = describe_source(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(format_info(info))
    return 0


def short_count(n: int) -> str:
    """A parameter count in the papers' style: ``30.2M``, ``1.02B``; below a million ``47.2k``
    (``0.0M`` would hide a small model's size), below a thousand the number itself."""
    if n < 1000:
        return str(n)
    for scale, unit in ((1e3, "k"), (1e6, "M")):
        text = f"{n / scale:.1f}"
        if float(text) < 1000:  # the unit as rounded: 999,960 is "1.0M", not "1000.0k"
            return text + unit
    return f"{n / 1e9:.2f}B"


def format_info(info: dict) -> str:
    """Human-readable summary of :func:`moepot.models.registry.describe` output."""
    cfg = info["config"]
    lines = [f"model: {info['name']} ({info['family']})"]
    if "run_dir" in info:
        lines.append(f"checkpoint: {info['checkpoint']} (the last checkpoint of run directory {info['run_dir']})")
    elif "checkpoint" in info:
        lines.append(f"checkpoint: {info['checkpoint']}")
    training = info.get("training")
    if training:
        progress = [f"{key} {training[key]}" for key in ("step", "epoch") if key in training]
        if "complete" in training:
            progress.append("finished" if training["complete"] else "not finished")
        lines.append("training checkpoint: " + (", ".join(progress) or "no progress stored"))
        if "finetuned_from" in training:
            lines.append(f"  fine-tuned from: {training['finetuned_from']}")
        for key, label in (("train_paths", "trained on"), ("test_paths", "tested on")):
            if key in training:
                lines.append(f"  {label}: {', '.join(training[key])}")
    official = info.get("official_args")
    if official:
        lines.append("official checkpoint (its args):")
        if "train_paths" in official:
            lines.append(f"  trained on: {', '.join(official['train_paths'])} (the order of the class logits)")
        if "test_paths" in official:
            lines.append(f"  tested on: {', '.join(official['test_paths'])}")
    lines.append(f"total parameters:     {info['total_params']:>14,} ({short_count(info['total_params'])})")
    lines.append(f"activated per sample: {info['activated_params']:>14,} ({short_count(info['activated_params'])})")
    lines.append("config:")
    lines.extend(f"  {key:<20} {value}" for key, value in cfg.items())
    return "\n".join(lines)

"""One entry point for every benchmark: ``python -m benchmarks [--quick] [--json] [--only NAME ...]``.

Each benchmark module exposes ``run(quick: bool) -> dict`` and ``markdown(results) -> str``; this
runner calls them in turn, prints each markdown table (or one JSON object with ``--json``), and
lifts the headline ratios to the top level of the JSON:

- ``moe_layer_ratio``, ``train_step_ratio``, ``inference_ratio``: sparse time / dense time
  (models_speed; lower is better, targets 0.40 / 0.50 / 0.45);
- ``moe_layer_flop_ratio``, ``train_step_flop_ratio``, ``inference_flop_ratio``: sparse matmul
  FLOPs / dense matmul FLOPs of the same three measurements, the floor of the time ratios if
  every FLOP ran at the same speed (models_speed);
- ``vs_original_train_step_ratio``, ``vs_original_inference_ratio``: our MoE-POT-Ti against the
  same weights run in the original's formulation (models_speed; no target);
- ``data_throughput_ratio``: samples/s of our mixture loader / a loader that opens the HDF5 file
  on every sample as the original does (data_throughput; target >= 5).

Every ratio is measured within one run, alternating the two sides, so machine noise cancels.
Under ``--quick`` the long ones (``models_scaling``, ``accuracy``) are skipped unless named with
``--only``; there each runs a reduced smoke version.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time

import torch

from moepot.malloc import tune_malloc

BENCHMARKS = {
    "models_speed": "benchmarks.models_speed",
    "models_scaling": "benchmarks.models_scaling",
    "data_throughput": "benchmarks.data_throughput",
    "generators_speed": "benchmarks.generators_speed",
    "accuracy": "benchmarks.accuracy",
}
HEADLINE_KEYS = (
    "moe_layer_ratio",
    "train_step_ratio",
    "inference_ratio",
    "moe_layer_flop_ratio",
    "train_step_flop_ratio",
    "inference_flop_ratio",
    "vs_original_train_step_ratio",
    "vs_original_inference_ratio",
    "data_throughput_ratio",
)
FULL_ONLY = ("models_scaling", "accuracy")  # skipped under --quick unless named with --only


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, well under a minute in all")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    args = parser.parse_args(argv)

    malloc_tuned = tune_malloc()  # as the moepot command line does (moepot.malloc)
    names = args.only or [n for n in BENCHMARKS if not (args.quick and n in FULL_ONLY)]
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "malloc_tuned": malloc_tuned,
    }
    summary: dict = {"machine": machine, "quick": args.quick, "results": {}}
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        start = time.perf_counter()
        results = module.run(quick=args.quick)
        results["wall_seconds"] = round(time.perf_counter() - start, 1)
        summary["results"][name] = results
        for key in HEADLINE_KEYS:
            if key in results:
                summary[key] = results[key]
        if not args.json:
            print(f"## {name} ({results['wall_seconds']} s)\n")
            print(module.markdown(results))
            print()
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=float)
        print()
    else:
        print("machine:", json.dumps(machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())

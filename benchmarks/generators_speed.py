"""Speed of the built-in PDE generators at the quick-suite size, and the quick suite's wall time.

For every generator: seconds per simulation (a trajectory; a CFDBench case) of ``spec.write_raw`` at its ``--suite quick`` grid
(a few trajectories, raw layout written, no conversion), and the projected time of its quick
share. Without ``quick``, the whole ``moepot data generate --suite quick`` is also run once in a
temporary data root (raw files, conversion, catalogue), the number the quickstart depends on
(target: <= 180 s on 2 CPU cores).

``python -m benchmarks.generators_speed [--quick]`` prints the markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from moepot.data.generators import all_generators
from moepot.data.generators.run import SUITES, build_request, generate

THREADS = 2
SUITE_TARGET_S = 180.0


def _time_generator(spec, folder: Path, n_trajectories: int) -> float:
    """Seconds per simulation of ``spec.write_raw`` at the quick size (a simulation is one
    trajectory, or one CFDBench case: :meth:`GeneratorSpec.simulation_count`)."""
    request = build_request(spec, folder, suite="quick", progress=False)
    request = dataclasses.replace(request, n_train=max(1, n_trajectories - 1), n_test=1)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    spec.write_raw(request)
    return (time.perf_counter() - start) / spec.simulation_count(request.n_train, request.n_test)


def run(quick: bool = False) -> dict:
    """Per generator seconds/trajectory at the quick size; the quick suite's wall time unless ``quick``.

    Returns: ``{"threads", "generators": {id: {...}}, "suite_projected_s", "suite_wall_s"}``.
    """
    torch.set_num_threads(THREADS)
    specs = all_generators()
    suite = SUITES["quick"]
    names = [name for name in specs if name in suite] if quick else list(specs)
    results: dict = {"threads": THREADS, "generators": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            spec = specs[name]
            request = build_request(spec, Path(tmp), suite="quick", progress=False)
            per_simulation = _time_generator(spec, Path(tmp) / "per_traj" / name, 4 if quick else 16)
            simulations = spec.simulation_count(request.n_train, request.n_test)
            results["generators"][name] = {
                "size": request.size,
                "stored_size": request.stored_size,
                "quick_trajectories": request.n_train + request.n_test,
                "quick_simulations": simulations,
                "s_per_simulation": per_simulation,
                "projected_quick_s": per_simulation * simulations,
                "in_quick_suite": name in suite,
            }
        results["suite_projected_s"] = sum(
            row["projected_quick_s"] for row in results["generators"].values() if row["in_quick_suite"]
        )
        if not quick:
            start = time.perf_counter()
            generate([], data_root=Path(tmp) / "suite", suite="quick", progress=False)
            results["suite_wall_s"] = time.perf_counter() - start
    return results


def markdown(results: dict) -> str:
    """The results as a markdown table plus the suite totals."""
    lines = [
        f"### Generators at the quick size ({results['threads']} torch threads)",
        "",
        "| dataset id | grid (sim/stored) | s / simulation | quick trajectories | simulations | projected quick s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["generators"].items():
        mark = " (quick suite)" if row["in_quick_suite"] else ""
        lines.append(
            f"| {name}{mark} | {row['size']}/{row['stored_size']} | {row['s_per_simulation']:.3f} | "
            f"{row['quick_trajectories']} | {row['quick_simulations']} | {row['projected_quick_s']:.1f} |"
        )
    lines.append("")
    lines.append("A simulation is one trajectory, except for cfdbench, which simulates whole cases (3 problems x "
                 "cases) and cuts them into 20-frame trajectories.")
    lines.append("")
    lines.append(f"Quick suite, projected from the rows above: {results['suite_projected_s']:.1f} s "
                 f"(target <= {SUITE_TARGET_S:.0f} s).")
    if "suite_wall_s" in results:
        lines.append(f"Quick suite, measured end to end (generate + convert + catalogue): "
                     f"{results['suite_wall_s']:.1f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick-suite generators only, no full suite run")
    print(markdown(run(quick=parser.parse_args().quick)))

"""``moepot data generate NAME... [--suite quick]``: built-in PDE generators -> protocol files + catalogue."""

from __future__ import annotations

import argparse
import json

from moepot.data.catalog import resolve_data_root
from moepot.data.generators import all_generators
from moepot.data.generators.run import SUITES, generate


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``generate`` to the ``moepot data`` command group."""
    suites = "\n".join(f"  {name}: {' '.join(ids)}" for name, ids in SUITES.items())
    parser = data_subparsers.add_parser(
        "generate",
        help="simulate small versions of the public datasets (raw layout -> protocol -> catalogue)",
        description=(
            "Run a numerical solver of each dataset's PDE, write the raw public layout under "
            "DATA_ROOT/raw/<id>/, convert it, and record the generated sizes in DATA_ROOT/catalog.yaml "
            "(read by every command given that data root). Output is deterministic per --seed; a "
            "rerun with the same options reuses the finished output.\n\n"
            "`--list` shows the ids that have a generator (docs/generators.md describes each).\n\n"
            f"Suites:\n{suites}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", metavar="NAME", nargs="*", help="dataset ids to generate")
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default=None,
        help="a named set of ids with its own default sizes (quick: the six pre-training sets at 64x64, ns2d_pdb at 32x32)",
    )
    parser.add_argument("--n-train", metavar="N", type=int, default=None, help="training trajectories")
    parser.add_argument("--n-test", metavar="N", type=int, default=None, help="test trajectories")
    parser.add_argument("--size", metavar="S", type=int, default=None, help="simulation grid side")
    parser.add_argument(
        "--stored-size",
        metavar="S",
        type=int,
        default=None,
        help="stored grid side, dividing --size (default: the upstream stored size if it "
        "divides --size, else --size)",
    )
    parser.add_argument("--seed", metavar="K", type=int, default=0, help="base random seed (default 0)")
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="root of the data and catalog.yaml (default: $MOEPOT_DATA_ROOT, else .)",
    )
    parser.add_argument("--catalog", metavar="FILE", default=None,
                        help="your own catalogue YAML, adding or overriding entries (default: $MOEPOT_CATALOG)")
    parser.add_argument("--keep-raw", action="store_true", help="keep the raw files after conversion")
    parser.add_argument("--workers", type=int, default=None,
                        help="datasets generated in parallel processes (default: one per core)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--list", action="store_true", help="list the ids that have a generator and exit")
    parser.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """Generate the requested ids and print what was written where."""
    if args.list:
        for name, spec in all_generators().items():
            print(f"{name:<42} {spec.description}")
        return 0
    root = resolve_data_root(args.data_root)
    entries = generate(
        args.names,
        data_root=root,
        n_train=args.n_train,
        n_test=args.n_test,
        size=args.size,
        stored_size=args.stored_size,
        seed=args.seed,
        suite=args.suite,
        progress=not args.no_progress,
        keep_raw=args.keep_raw,
        workers=args.workers,
        catalog_file=args.catalog,
    )
    rows = [
        {
            "name": name,
            "train_size": entry.train_size,
            "test_size": entry.test_size,
            "in_size": list(entry.in_size),
            "t_total": entry.t_total,
            "n_channels": entry.n_channels,
            "train_path": str(entry.path("train", root)),
            "test_path": str(entry.path("test", root)),
        }
        for name, entry in entries.items()
    ]
    if args.json:
        print(json.dumps({"data_root": str(root), "datasets": rows}, indent=2))
        return 0
    table = [("id", "train", "test", "grid", "T", "C", "train files")]
    table += [
        (
            r["name"],
            str(r["train_size"]),
            str(r["test_size"]),
            "x".join(map(str, r["in_size"])),
            str(r["t_total"]),
            str(r["n_channels"]),
            r["train_path"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\ncatalogue: {root / 'catalog.yaml'}")
    return 0

"""``moepot data``: list, inspect and validate the catalogue's datasets (plus convert/generate).

``moepot data list`` / ``info NAME`` / ``validate NAME|PATH``; ``convert`` and ``generate`` are
added by :mod:`moepot.data.converters.cli` and :mod:`moepot.data.generators.cli` when present.
Every subcommand takes ``--data-root DIR`` and ``--catalog FILE`` (:func:`add_data_options`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moepot._imports import import_if_present
from moepot.data.catalog import ENV_CATALOG, ENV_DATA_ROOT, SPLITS, Catalog, DatasetEntry, load_catalog
from moepot.data.protocol import SampleReader
from moepot.errors import DataError

# Modules that add subcommands to the `data` group.
SUBCOMMAND_MODULES = ("moepot.data.converters.cli", "moepot.data.generators.cli")


def add_data_options(parser: argparse.ArgumentParser, *, json_output: bool = False) -> None:
    """Add the common options ``--data-root``, ``--catalog`` (and ``--json``) to a subcommand."""
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help=f"root the catalogue paths are relative to (default: ${ENV_DATA_ROOT}, "
                             "else the current directory)")
    parser.add_argument("--catalog", metavar="FILE", default=None,
                        help=f"your own catalogue YAML, adding or overriding entries (default: ${ENV_CATALOG})")
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def catalog_from_args(args: argparse.Namespace) -> Catalog:
    """The catalogue selected by ``--catalog`` and ``--data-root``."""
    return load_catalog(catalog_file=args.catalog, data_root=args.data_root)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="datasets: list, info, validate, convert, generate",
                                 description="Datasets of the catalogue and their protocol files.")

    def print_group_help(args: argparse.Namespace) -> int:
        data.print_help()
        return 0

    data.set_defaults(func=print_group_help)
    data_subparsers = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    listing = data_subparsers.add_parser("list", help="every catalogue dataset and whether its files exist")
    add_data_options(listing, json_output=True)
    listing.set_defaults(func=run_list)

    info = data_subparsers.add_parser("info", help="one dataset's facts, paths and stored shapes")
    info.add_argument("name", help="dataset id (see `moepot data list`)")
    add_data_options(info, json_output=True)
    info.set_defaults(func=run_info)

    validate = data_subparsers.add_parser(
        "validate", help="scan every sample of a dataset (or a file/directory) and report all problems",
        description="Scan every sample: shape, dtype, finiteness, time steps against t_in + t_test, "
                    "sample counts. Exit status 1 if any problem is found.")
    validate.add_argument("target", metavar="NAME|PATH", help="dataset id, or a split file / scatter directory")
    validate.add_argument("--split", choices=(*SPLITS, "both"), default="both", help="splits of NAME to scan")
    validate.add_argument("--max-samples", type=int, default=None, metavar="N",
                          help="scan only the first N samples of each split (default: all)")
    validate.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2,
                          help="spatial axes of a PATH's samples (default 2)")
    add_data_options(validate, json_output=True)
    validate.set_defaults(func=run_validate)

    for module_name in SUBCOMMAND_MODULES:
        module = import_if_present(module_name)
        if module is not None:
            module.register(data_subparsers)


# ----------------------------------------------------------------------------------------------
# list


def _presence(entry: DatasetEntry, root: Path) -> dict[str, bool]:
    return {split: entry.path(split, root).exists() for split in SPLITS}


def run_list(args: argparse.Namespace) -> int:
    catalog = catalog_from_args(args)
    rows = []
    for name, entry in catalog.items():
        present = _presence(entry, catalog.data_root)
        rows.append({"name": name, "train_size": entry.train_size, "test_size": entry.test_size,
                     "in_size": list(entry.in_size), "n_channels": entry.n_channels, "t_total": entry.t_total,
                     "scatter": entry.scatter, "train_present": present["train"],
                     "test_present": present["test"]})
    if args.json:
        print(json.dumps({"data_root": str(catalog.data_root), "catalogues": list(catalog.sources),
                          "datasets": rows}, indent=2))
        return 0
    header = ("id", "train", "test", "grid", "T", "C", "storage", "files")
    table = [header]
    for row in rows:
        files = {(True, True): "yes", (True, False): "train only", (False, True): "test only",
                 (False, False): "no"}[(row["train_present"], row["test_present"])]
        table.append((row["name"], str(row["train_size"]), str(row["test_size"]),
                      "x".join(str(s) for s in row["in_size"]), str(row["t_total"]), str(row["n_channels"]),
                      "scatter" if row["scatter"] else "single", files))
    print(_format_table(table))
    print(f"\ndata root: {catalog.data_root}")
    return 0


def _format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


# ----------------------------------------------------------------------------------------------
# info


def run_info(args: argparse.Namespace) -> int:
    catalog = catalog_from_args(args)
    entry = catalog[args.name]
    splits = {}
    for split in SPLITS:
        path = entry.path(split, catalog.data_root)
        split_info: dict = {"path": str(path), "exists": path.exists()}
        if path.exists():
            try:
                stored = SampleReader(path, entry.scatter, spatial_dims=entry.spatial_dims).info()
                split_info.update(stored_samples=stored.n_samples, sample_shape=list(stored.sample_shape or ()),
                                  dtype=str(stored.dtype), channel_axis=stored.channel_axis)
            except DataError as exc:
                split_info["error"] = str(exc)
        splits[split] = split_info
    origins = sorted(set(entry.origins.values()))
    if args.json:
        print(json.dumps({"name": entry.name, "fields": entry.fields(), "defined_in": origins,
                          "data_root": str(catalog.data_root), "splits": splits}, indent=2))
        return 0
    print(f"{entry.name}  (defined in: {'; '.join(origins)})")
    for key, value in entry.fields().items():
        print(f"  {key:<14} {value}")
    for split, split_info in splits.items():
        print(f"  {split} files: {split_info['path']}")
        if not split_info["exists"]:
            print("    missing")
        elif "error" in split_info:
            print(f"    unreadable: {split_info['error']}")
        else:
            print(f"    {split_info['stored_samples']} samples stored, each {split_info['sample_shape']} "
                  f"[X, Y, T, C], {split_info['dtype']}")
    return 0


# ----------------------------------------------------------------------------------------------
# validate


def run_validate(args: argparse.Namespace) -> int:
    from moepot.data.validate import validate_entry, validate_path

    if args.max_samples is not None and args.max_samples < 1:
        raise DataError(f"--max-samples must be >= 1, got {args.max_samples}")
    catalog = catalog_from_args(args)
    progress = not args.json and sys.stderr.isatty()
    if args.target in catalog:
        splits = SPLITS if args.split == "both" else (args.split,)
        report = validate_entry(catalog[args.target], catalog.data_root, splits=splits,
                                max_samples=args.max_samples, progress=progress)
    elif Path(args.target).exists():
        report = validate_path(args.target, spatial_dims=args.spatial_dims, max_samples=args.max_samples,
                               progress=progress)
    else:
        try:
            catalog[args.target]
        except DataError as exc:  # the message lists close matches
            raise DataError(f"{args.target!r} is neither an existing file or directory nor a catalogue id: "
                            f"{exc}") from None
        raise AssertionError("unreachable")

    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            print(f"PROBLEM  {problem}")
        for warning in report.warnings:
            print(f"warning  {warning}")
        verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"{report.target}: {report.samples_checked} samples scanned, {verdict}, "
              f"{len(report.warnings)} warning(s)")
    return 0 if report.ok else 1

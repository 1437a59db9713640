"""``moepot data convert SOURCE RAW_PATH --name ID``: raw public files -> protocol files of a catalogue entry."""

from __future__ import annotations

import argparse

from moepot.data.converters import SOURCES, convert


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert`` to the ``moepot data`` command group."""
    sources = "\n".join(f"  {name:<13} {spec.raw}" for name, spec in SOURCES.items())
    parser = data_subparsers.add_parser(
        "convert",
        help="convert a raw public dataset file/folder into a catalogue entry",
        description=(
            "Convert an original public dataset (file or folder) into the HDF5 protocol files of "
            "catalogue entry --name, with the original's axis order, channel order and split. "
            "Finished outputs are kept, so rerunning resumes an interrupted conversion.\n\n"
            f"SOURCE and RAW_PATH:\n{sources}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", metavar="SOURCE", choices=list(SOURCES), help="raw format: " + ", ".join(SOURCES)
    )
    parser.add_argument("raw_path", metavar="RAW_PATH", help="the original file or folder")
    parser.add_argument(
        "--name", required=True, help="catalogue dataset id receiving the output, e.g. ns2d_fno_1e-5"
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        default=None,
        help="root of the catalogue paths (default: $MOEPOT_DATA_ROOT, else .)",
    )
    parser.add_argument(
        "--catalog", metavar="FILE", default=None, help="extra catalogue YAML file (default: $MOEPOT_CATALOG)"
    )
    parser.add_argument(
        "--n-train",
        metavar="N",
        type=int,
        default=None,
        help="training samples to write (default: the original's split)",
    )
    parser.add_argument(
        "--n-test",
        metavar="N",
        type=int,
        default=None,
        help="test samples to write (default: the original's split)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """Run one conversion and print where the files went."""
    paths = convert(
        args.source,
        args.raw_path,
        name=args.name,
        data_root=args.data_root,
        n_train=args.n_train,
        n_test=args.n_test,
        progress=not args.no_progress,
        catalog_file=args.catalog,
    )
    folders = sorted({str(path.parent) if path.name.startswith("data_") else str(path) for path in paths})
    print(f"{args.name}: {len(paths)} file(s) in {', '.join(folders)}")
    return 0

"""Converters from the public raw dataset formats to the moepot HDF5 protocol.

One entry point, :func:`convert`, and one registry, :data:`SOURCES` (SOURCE name -> converter).
Each family module (``fno``, ``pdebench``, ``cfdbench``, ``pdearena``) reads its raw layout
sample by sample and writes the outputs of a catalogue entry with the original's axis
permutations, channel orders and split rules (``docs/converters.md``; the raw layouts are in
``raw-formats.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moepot.data.converters import cfdbench, fno, pdearena, pdebench
from moepot.data.converters.outputs import OutputTarget
from moepot.errors import DataError

logger = logging.getLogger(__name__)

# (raw_path, target, n_train, n_test, progress) -> written paths
ConverterFn = Callable[[Path, OutputTarget, int | None, int | None, bool], list[Path]]


@dataclass(frozen=True)
class Source:
    """One raw format the converters read.

    Attributes:
        convert: the family function doing the work.
        scatter: whether it writes scatter (one file per trajectory) or single split files.
        raw: what RAW_PATH must be, in words (for --help and errors).
    """

    convert: ConverterFn
    scatter: bool
    raw: str


SOURCES: dict[str, Source] = {
    "fno": Source(fno.convert_fno, False, "FNO NavierStokes_V*.mat file (MATLAB v7.3 or v5)"),
    "pdebench-cfd": Source(pdebench.convert_cfd, True, "PDEBench 2D/3D_CFD_*.hdf5 file"),
    "pdebench-swe": Source(pdebench.convert_swe, True, "PDEBench 2D_rdb_NA_NA.h5 file"),
    "pdebench-dr": Source(pdebench.convert_dr, True, "PDEBench 2D_diff-react_NA_NA.h5 file"),
    "cfdbench": Source(cfdbench.convert_cfdbench, False, "CFDBench folder with cavity/ tube/ cylinder/"),
    "pdearena-ns": Source(pdearena.convert_ns, True, "PDEArena NavierStokes2D folder of *.h5 files"),
    "pdearena-sw": Source(pdearena.convert_sw, True, "PDEArena ShallowWater2D folder of output.nc files"),
}


def output_target(
    name: str, data_root: str | os.PathLike | None, catalog_file: str | os.PathLike | None = None
) -> OutputTarget:
    """Resolve the output locations of catalogue entry ``name`` under ``data_root``."""
    from moepot.data.catalog import load_catalog, resolve_data_root
    from moepot.io import check_directory_possible

    root = check_directory_possible(resolve_data_root(data_root))
    entry = load_catalog(catalog_file=catalog_file, data_root=root)[name]
    return OutputTarget(
        name=name,
        train_path=Path(entry.path("train", root)),
        test_path=Path(entry.path("test", root)),
        scatter=bool(entry.scatter),
        n_channels=int(entry.n_channels),
        in_size=tuple(int(s) for s in entry.in_size),
        train_size=int(entry.train_size),
        test_size=int(entry.test_size),
    )


def convert(
    source: str,
    raw_path: str | os.PathLike,
    *,
    name: str,
    data_root: str | os.PathLike | None,
    n_train: int | None = None,
    n_test: int | None = None,
    progress: bool = True,
    catalog_file: str | os.PathLike | None = None,
) -> list[Path]:
    """Convert the raw file or folder ``raw_path`` of format ``source`` into catalogue entry ``name``.

    Args:
        source: one of :data:`SOURCES` (``fno``, ``pdebench-cfd``, ``pdebench-swe``,
            ``pdebench-dr``, ``cfdbench``, ``pdearena-ns``, ``pdearena-sw``).
        raw_path: the original file or folder.
        name: catalogue id whose train/test paths receive the output.
        data_root: root the catalogue paths are relative to (None: ``$MOEPOT_DATA_ROOT`` or cwd).
        n_train: override the original's number of training samples (per-source rule in
            ``docs/converters.md``).
        n_test: override the original's number of test samples.
        progress: show tqdm progress bars.
        catalog_file: extra catalogue file (``--catalog``) with the entry ``name``.

    Returns:
        The protocol files of the entry: train then test (scatter: every ``data_k.hdf5``).
        Outputs that already exist are kept, so a rerun resumes an interrupted conversion.

    Raises:
        DataError: unknown source or name, a raw file of the wrong kind, missing keys,
            unexpected shapes, or too few samples for the split.
    """
    if source not in SOURCES:
        raise DataError(f"unknown converter source '{source}'; expected one of {', '.join(SOURCES)}")
    spec = SOURCES[source]
    raw = Path(raw_path)
    if not raw.exists():
        raise DataError(f"raw path {raw} does not exist (expected a {spec.raw})")
    target = output_target(name, data_root, catalog_file)
    if target.scatter != spec.scatter:
        stored = "one file per trajectory (scatter)" if target.scatter else "one file per split"
        raise DataError(
            f"catalogue entry '{name}' is stored as {stored}, which source '{source}' does not "
            "write; is this the right --name for this source?"
        )
    logger.info("converting %s (%s) into '%s'", raw, source, name)
    return spec.convert(raw, target, n_train, n_test, progress)


__all__ = ["SOURCES", "Source", "convert", "output_target"]

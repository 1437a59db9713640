"""Where a conversion writes and how: output locations, split checks, scatter and streamed single files.

Every converter family reads its raw layout and hands protocol-shaped arrays to the two writers
here, so resuming, atomicity and progress reporting live in one place:

* :func:`write_scatter` writes ``data_0.hdf5, data_1.hdf5, ...`` (one trajectory each, through
  :func:`moepot.data.protocol.write_sample`);
* :func:`write_single_streamed` writes a whole ``[N, X, Y, T(, C)]`` split file block by block
  through :class:`moepot.data.protocol.SingleWriter` (final shape created up front, one atomic
  rename at the end), so the memory held is one block, never the whole split.

Resuming: every output file records its *origin* (the raw file or folder and which raw samples
it holds: :func:`raw_identity`) in the HDF5 attribute
:data:`moepot.data.protocol.ORIGIN_ATTR`. Each file is renamed into place only once complete,
so a rerun keeps the files whose origin is the one it would write (an interrupted conversion
resumes where it stopped) and rewrites every other one: a rerun with another split
(``--n-train``), other raw data, or over files of another origin replaces them, and deletes
scatter files beyond the new count, so a split never mixes two conversions.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from moepot.data import protocol
from moepot.errors import DataError

logger = logging.getLogger(__name__)

# Upper bound on the bytes of raw data one block of a streamed single-file split may hold.
BLOCK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class OutputTarget:
    """The protocol outputs of one catalogue entry.

    Attributes:
        name: dataset id in the catalogue.
        train_path: train split (a file for single storage, a directory for scatter storage).
        test_path: test split, likewise.
        scatter: True for one file per trajectory, False for one file per split.
        n_channels: channels per sample the catalogue expects.
        in_size: the catalogue's spatial size (used by converters that resample, e.g. CFDBench).
        train_size: the catalogue's number of training samples (the original's split for FNO).
        test_size: the catalogue's number of test samples.
    """

    name: str
    train_path: Path
    test_path: Path
    scatter: bool
    n_channels: int
    in_size: tuple[int, ...]
    train_size: int
    test_size: int

    def path(self, split: str) -> Path:
        """Output path of ``split`` (``"train"`` or ``"test"``)."""
        return {"train": self.train_path, "test": self.test_path}[split]


def check_channels(target: OutputTarget, n_channels: int, raw_file: Path, key: str) -> None:
    """Raise a DataError when the raw data has another channel count than the catalogue entry."""
    if n_channels != target.n_channels:
        raise DataError(
            f"{raw_file}: '{key}' gives {n_channels} channel(s) per sample but catalogue entry "
            f"'{target.name}' expects n_channels = {target.n_channels}; is this the right --name "
            "for this file?"
        )


def require_samples(raw_file: Path, key: str, available: int, n_train: int, n_test: int, rule: str) -> None:
    """Raise a DataError when ``available`` samples cannot supply ``n_train + n_test`` disjoint ones."""
    if n_train < 0 or n_test < 0:
        raise DataError(f"--n-train/--n-test must be >= 0, got {n_train} / {n_test}")
    if n_train + n_test > available:
        raise DataError(
            f"{raw_file}: '{key}' holds {available} sample(s) but the split needs "
            f"n_train + n_test = {n_train} + {n_test} = {n_train + n_test} ({rule}); "
            "pass smaller --n-train/--n-test"
        )


def raw_identity(raw_path: Path, root: Path | None = None) -> str:
    """How output files name the raw data they came from, so a replaced or regenerated raw file
    is told apart: a file's name (its path under ``root`` if given: PDEArena's runs are all
    ``output.nc``), size and modification time; a folder's name and a digest of the same facts
    of every file under it (CFDBench's case files)."""
    name = raw_path.relative_to(root).as_posix() if root is not None else raw_path.name
    if raw_path.is_file():
        stat = raw_path.stat()
        return f"{name} ({stat.st_size} bytes, mtime_ns {stat.st_mtime_ns})"
    digest = hashlib.sha256()
    for file in sorted(p for p in raw_path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(raw_path).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"{name}/ (files {digest.hexdigest()[:16]})"


def write_scatter(
    directory: Path,
    count: int,
    read_sample: Callable[[int], np.ndarray],
    origin: Callable[[int], str],
    *,
    desc: str,
    progress: bool,
) -> list[Path]:
    """Write trajectories ``0..count-1`` of a scatter split, keeping those already written.

    A file ``data_{k}.hdf5`` that already records ``origin(k)`` is kept; any other one (another
    origin, or none: not written by a conversion of ours) is rewritten, and ``data_{k}`` files
    with ``k >= count`` are deleted.

    Args:
        directory: the split directory (created if missing).
        count: number of trajectories to write.
        read_sample: ``k -> [X, Y, T, C]`` (3-D: ``[X, Y, Z, T, C]``) array of output trajectory k;
            called only for files still to write.
        origin: ``k ->`` where trajectory k comes from (:func:`raw_identity` and its sample).
        desc: progress-bar label.
        progress: show a tqdm progress bar.

    Returns:
        The ``count`` file paths, in order.
    """
    paths = [directory / protocol.sample_file_name(k) for k in range(count)]  # data_{k}.hdf5
    todo = [k for k, path in enumerate(paths) if not path.exists() or protocol.read_origin(path) != origin(k)]
    kept = count - len(todo)
    replaced = sum(paths[k].exists() for k in todo)
    if kept:
        logger.info("%s: %d of %d files already written, resuming", desc, kept, count)
    if replaced:
        logger.warning("%s: replacing %d file(s) written from other raw data or another split", desc, replaced)
    directory.mkdir(parents=True, exist_ok=True)
    beyond = [p for p in directory.iterdir() if (m := protocol.SAMPLE_FILE.fullmatch(p.name)) and int(m[1]) >= count]
    if beyond:
        logger.warning("%s: deleting %d file(s) beyond the %d of this split", desc, len(beyond), count)
        for path in beyond:
            path.unlink()
    for k in tqdm(todo, desc=desc, unit="sample", disable=not progress):
        protocol.write_sample(paths[k], np.asarray(read_sample(k), dtype=np.float32), origin=origin(k))
    return paths


def single_file_complete(path: Path, shape: tuple[int, ...], origin: str) -> bool:
    """True when ``path`` already holds a protocol ``data`` dataset of exactly ``shape``, from ``origin``."""
    if not path.is_file() or protocol.read_origin(path) != origin:
        return False
    try:
        with h5py.File(path, "r") as f:
            return "data" in f and tuple(f["data"].shape) == tuple(shape)
    except OSError:
        return False


def write_single_streamed(
    path: Path,
    shape: tuple[int, ...],
    blocks: Iterable[tuple[int, np.ndarray]],
    origin: str,
    *,
    desc: str,
    progress: bool,
) -> Path:
    """Write a single-file split ``data: [N, ...]`` float32 from blocks of consecutive samples.

    Uses :class:`moepot.data.protocol.SingleWriter`: the dataset is created with its final
    ``shape`` and filled sample by sample inside one atomic write, so only one block is in memory
    and a killed process leaves no partial file. A file that already has ``shape`` and records
    ``origin`` is kept (a finished earlier run); any other one is replaced.

    Args:
        path: output file.
        shape: ``[N, X, Y, T]`` or ``[N, X, Y, T, C]``.
        blocks: ``(start, block)`` pairs, ``block: [b, *shape[1:]]`` going to samples
            ``start .. start + b - 1``; together they must cover all N samples.
        origin: where the split comes from (:func:`raw_identity` and its samples).
        desc: progress-bar label.
        progress: show a tqdm progress bar.
    """
    if single_file_complete(path, shape, origin):
        logger.info("%s: %s already written, skipping", desc, path)
        return path
    if path.exists():
        logger.warning("%s: replacing %s (written from other raw data or another split)", desc, path)
    with (
        protocol.SingleWriter(path, n_samples=shape[0], sample_shape=shape[1:], origin=origin) as writer,
        tqdm(total=shape[0], desc=desc, unit="sample", disable=not progress) as bar,
    ):
        for start, block in blocks:
            for offset, sample in enumerate(block):
                writer.write(start + offset, sample)
            bar.update(len(block))
    return path


def block_ranges(start: int, stop: int, bytes_per_sample: int) -> Iterator[tuple[int, int]]:
    """Split ``start..stop`` into consecutive ranges of at most :data:`BLOCK_BYTES` each."""
    step = max(1, BLOCK_BYTES // max(1, bytes_per_sample))
    for lo in range(start, stop, step):
        yield lo, min(lo + step, stop)


def dataset_keys(group: Any) -> list[str]:
    """Sorted member names of an h5py group (for error messages)."""
    return sorted(group.keys())

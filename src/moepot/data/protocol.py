"""The HDF5 storage protocol of the original code: writers and a lazy, worker-safe reader.

Every file holds exactly one dataset named ``data``. Two layouts:

* single storage: one file per split, ``data`` shaped ``[N, X, Y, T, C]`` or ``[N, X, Y, T]``
  (no channel axis; the reader adds one);
* scatter storage: a directory per split with ``data_0.hdf5, data_1.hdf5, ...`` (contiguous
  integers from 0, no zero padding), each ``data`` shaped ``[X, Y, T, C]`` (or ``[X, Y, T]``).

3-D sets have one more spatial axis (``[X, Y, Z, T, C]`` per sample). Our writers store float32,
one HDF5 chunk per sample, and write atomically; readers accept the original's unchunked
float64/float32 files too and always return float32. A reader can return a time window of a
sample (``read(i, steps=slice(s, e))``), reading only those frames from disk.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from moepot.errors import DataError
from moepot.io import atomic_path

DATA_KEY = "data"
# Root attribute in which our converters record where a file's data came from (readers ignore it)
ORIGIN_ATTR = "moepot_origin"
SAMPLE_FILE = re.compile(r"data_(0|[1-9][0-9]*)\.hdf5")


def sample_file_name(index: int) -> str:
    """File name of trajectory ``index`` in a scatter directory: ``data_{index}.hdf5``."""
    return f"data_{index}.hdf5"


# ----------------------------------------------------------------------------------------------
# Writers


def write_single(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a whole split as one file: ``array: [N, X, Y, T, C]`` or ``[N, X, Y, T]`` (3-D: one more axis).

    Stored as float32 with one chunk per sample; written atomically. Raises :class:`DataError`
    for a non-numeric, non-finite or too-low-rank array.
    """
    array = _checked_float32(array, path, min_rank=4, what="[N, X, Y, T(, C)]")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(DATA_KEY, data=array, chunks=(1, *array.shape[1:]) if array.shape[0] else None)
    return Path(path)


def write_sample(path: str | os.PathLike, array: np.ndarray, origin: str | None = None) -> Path:
    """Write one trajectory of a scatter split: ``array: [X, Y, T, C]`` (3-D: ``[X, Y, Z, T, C]``).

    ``path`` is usually ``<split dir>/data_{i}.hdf5`` (see :func:`sample_file_name`). Stored as
    float32 in one chunk (a chunked layout makes reading a time window cheaper than the
    contiguous one: HDF5 then copies only the window's bytes), written atomically. ``origin``,
    if given, is stored in the root attribute :data:`ORIGIN_ATTR` (see :func:`read_origin`).
    """
    array = _checked_float32(array, path, min_rank=3, what="[X, Y, T(, C)]")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(DATA_KEY, data=array, chunks=array.shape if array.size else None)
        if origin is not None:
            f.attrs[ORIGIN_ATTR] = origin
    return Path(path)


def read_origin(path: str | os.PathLike) -> str | None:
    """The :data:`ORIGIN_ATTR` recorded in ``path``; None if it has none or is not readable HDF5."""
    try:
        with h5py.File(path, "r") as f:
            origin = f.attrs.get(ORIGIN_ATTR)
    except OSError:
        return None
    return origin.decode() if isinstance(origin, bytes) else origin


class SingleWriter:
    """Write a single-storage split sample by sample (for data too large to hold at once).

    Example::

        with SingleWriter(path, n_samples=100, sample_shape=(64, 64, 20, 3)) as writer:
            for i, sample in enumerate(samples):
                writer.write(i, sample)        # sample: [X, Y, T, C]

    The file appears at ``path`` only when every sample was written and the block exits
    without an exception (otherwise nothing is left behind).
    """

    def __init__(self, path: str | os.PathLike, n_samples: int, sample_shape: tuple[int, ...],
                 origin: str | None = None):
        self.path = Path(path)
        self.n_samples = int(n_samples)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.origin = origin  # stored in the root attribute ORIGIN_ATTR if given
        self._written = np.zeros(self.n_samples, dtype=bool)
        self._atomic = None
        self._file: h5py.File | None = None
        self._data: h5py.Dataset | None = None

    def __enter__(self) -> SingleWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        chunks = (1, *self.sample_shape) if self.n_samples else None
        self._data = self._file.create_dataset(DATA_KEY, shape=(self.n_samples, *self.sample_shape),
                                               dtype=np.float32, chunks=chunks)
        if self.origin is not None:
            self._file.attrs[ORIGIN_ATTR] = self.origin
        return self

    def write(self, index: int, sample: np.ndarray) -> None:
        """Store ``sample: [X, Y, T(, C)]`` (shape ``sample_shape``) at ``index``."""
        if self._data is None:
            raise RuntimeError("SingleWriter.write called outside its `with` block")
        if not 0 <= index < self.n_samples:
            raise DataError(f"{self.path}: sample index {index} out of range [0, {self.n_samples})")
        sample = _checked_float32(sample, f"{self.path} (sample {index})", min_rank=3, what="[X, Y, T(, C)]")
        if sample.shape != self.sample_shape:
            raise DataError(f"{self.path}: sample {index} has shape {sample.shape}, expected {self.sample_shape}")
        self._data[index] = sample
        self._written[index] = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._file is not None and self._atomic is not None
        self._file.close()
        self._data = None
        if exc_type is None and not self._written.all():
            missing = np.flatnonzero(~self._written)
            exc = DataError(f"{self.path}: {missing.size} of {self.n_samples} samples were never written "
                            f"(first: {missing[:5].tolist()}); file not created")
            self._atomic.__exit__(DataError, exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)


def _checked_float32(array: np.ndarray, path: str | os.PathLike, *, min_rank: int, what: str) -> np.ndarray:
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{path}: cannot store dtype {array.dtype} as float32 data")
    if array.ndim < min_rank:
        raise DataError(f"{path}: expected an array {what}, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        raise DataError(f"{path}: refusing to write {int(bad.sum())} NaN/Inf values "
                        f"(first at index {_first_index(bad)})")
    return array


# ----------------------------------------------------------------------------------------------
# Reader


@dataclass(frozen=True)
class StorageInfo:
    """What the header of a split says (no sample data read).

    Attributes:
        path: the split's file or scatter directory.
        scatter: one file per sample.
        n_samples: samples present (scatter: data_0 .. data_{n-1} contiguous from 0).
        sample_shape: ``(X, Y, T, C)`` (3-D: ``(X, Y, Z, T, C)``) after adding a missing channel
            axis; for scatter storage, the shape of ``data_0.hdf5`` (None when there is none).
        channel_axis: whether the stored array has a channel axis.
        dtype: stored dtype (of ``data_0.hdf5`` for scatter).
        missing: scatter indices below the highest file present that have no file (gaps).
    """

    path: Path
    scatter: bool
    n_samples: int
    sample_shape: tuple[int, ...] | None
    channel_axis: bool
    dtype: np.dtype | None
    missing: tuple[int, ...] = ()


class SampleReader:
    """Read samples of one split, opening HDF5 lazily in each process and keeping it open.

    Nothing is opened in ``__init__``; the first :meth:`read` in a process opens the file and
    keeps the handle. A handle inherited from another process (a forked DataLoader worker) is
    never used: the reader notices the changed process id and opens its own. Pickling (spawn
    workers, DDP) drops handles. Scatter storage keeps up to ``max_open`` per-sample files open
    (least recently used closed first).

    Args:
        path: the split's file (single storage) or directory (scatter storage).
        scatter: storage layout.
        spatial_dims: 2 for ``[X, Y, T, C]`` samples, 3 for ``[X, Y, Z, T, C]``.
        max_open: most scatter files kept open at once.
    """

    def __init__(self, path: str | os.PathLike, scatter: bool, *, spatial_dims: int = 2, max_open: int = 64):
        self.path = Path(path)
        self.scatter = bool(scatter)
        self.spatial_dims = int(spatial_dims)
        self.max_open = max(1, int(max_open))
        self.open_count = 0  # files opened by this process (for tests and diagnostics)
        self._pid: int | None = None
        self._handles: OrderedDict[Path, tuple[h5py.File, h5py.Dataset]] = OrderedDict()
        self._length: int | None = None

    # -- process-local handles ------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether this process holds an open handle."""
        return self._pid == os.getpid() and bool(self._handles)

    def _dataset(self, file_path: Path) -> h5py.Dataset:
        if self._pid != os.getpid():  # first use here, or inherited through fork: never reuse
            self._handles = OrderedDict()
            self._pid = os.getpid()
            self.open_count = 0
        entry = self._handles.get(file_path)
        if entry is None:
            handle = _open(file_path)
            self.open_count += 1
            try:
                entry = (handle, _data_of(handle, file_path))
            except DataError:
                handle.close()
                raise
            self._handles[file_path] = entry
            while len(self._handles) > self.max_open:
                _, (oldest, _) = self._handles.popitem(last=False)
                oldest.close()
        elif self.scatter:  # least recently used order matters only with many files
            self._handles.move_to_end(file_path)
        return entry[1]

    def close(self) -> None:
        """Close this process's handles (a later read reopens)."""
        if self._pid == os.getpid():
            for handle, _ in self._handles.values():
                with contextlib.suppress(Exception):  # may fail during interpreter shutdown
                    handle.close()
        self._handles = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> SampleReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- layout ---------------------------------------------------------------------------------

    def sample_path(self, index: int) -> Path:
        """The file holding sample ``index`` (the split's file for single storage)."""
        return self.path / sample_file_name(index) if self.scatter else self.path

    def __len__(self) -> int:
        if self._length is None:
            self._length = self.info().n_samples
        return self._length

    def info(self) -> StorageInfo:
        """Read the header: sample count and shape, dtype (opens briefly; keeps nothing open)."""
        if self.scatter:
            return self._scatter_info()
        with _open(self.path) as f:
            data = _data_of(f, self.path)
            rank = self.spatial_dims + 3
            if data.ndim not in (rank - 1, rank):
                raise DataError(f"{self.path}: 'data' has shape {data.shape}; expected rank {rank} "
                                f"{_layout(self.spatial_dims, True)} or {rank - 1} without the channel axis")
            channel_axis = data.ndim == rank
            shape = tuple(data.shape[1:]) + (() if channel_axis else (1,))
            return StorageInfo(self.path, False, int(data.shape[0]), shape, channel_axis, data.dtype)

    def _scatter_info(self) -> StorageInfo:
        if not self.path.is_dir():
            what = "a file, expected a directory" if self.path.exists() else "does not exist"
            raise DataError(f"{self.path}: scatter split directory {what} (holding data_0.hdf5, data_1.hdf5, ...)")
        present = {int(m.group(1)) for p in self.path.iterdir() if (m := SAMPLE_FILE.fullmatch(p.name))}
        n = 0
        while n in present:
            n += 1
        missing = tuple(i for i in range(n, max(present) + 1) if i not in present) if present else ()
        if n == 0:
            return StorageInfo(self.path, True, 0, None, True, None, missing)
        with _open(self.sample_path(0)) as f:
            data = _data_of(f, self.sample_path(0))
            shape, channel_axis = self._sample_shape(data.shape, self.sample_path(0))
            return StorageInfo(self.path, True, n, shape, channel_axis, data.dtype, missing)

    def _sample_shape(self, shape: tuple[int, ...], file_path: Path,
                      index: int | None = None) -> tuple[tuple[int, ...], bool]:
        rank = self.spatial_dims + 2
        if len(shape) == rank:
            return tuple(shape), True
        if len(shape) == rank - 1:
            return (*shape, 1), False
        where = f" sample {index}" if index is not None else ""
        raise DataError(f"{file_path}{where}: shape {tuple(shape)}; expected rank {rank} "
                        f"{_layout(self.spatial_dims, False)} or {rank - 1} without the channel axis")

    # -- reading --------------------------------------------------------------------------------

    def sample_shape(self, index: int) -> tuple[int, ...]:
        """Shape ``(X, Y, T, C)`` of sample ``index`` from the header, without reading its data.

        Opens (and keeps open) the sample's file like :meth:`read`. Raises :class:`DataError`
        naming the file and sample for a missing or malformed file or an index out of range.
        """
        index, file_path, data = self._locate(index)
        shape, _ = self._sample_shape(data.shape if self.scatter else data.shape[1:], file_path, index)
        return shape

    def read(self, index: int, steps: slice | None = None) -> np.ndarray:
        """Sample ``index`` as float32 ``[X, Y, T, C]`` (3-D: ``[X, Y, Z, T, C]``).

        Args:
            index: sample number in the split.
            steps: a time window ``slice(start, stop)`` with ``0 <= start <= stop <= T``; only
                those frames are read from disk (and checked). None reads the whole trajectory.

        Raises:
            DataError: naming the file and sample, for a missing or unreadable file, a wrong
                rank or dtype, a window outside the stored steps, or NaN/Inf values.
        """
        index, file_path, data = self._locate(index)
        selection: tuple = () if self.scatter else (index,)
        if steps is not None:
            shape, channel_axis = self._sample_shape(data.shape if self.scatter else data.shape[1:], file_path, index)
            n_steps = shape[self.spatial_dims]
            start, stop = steps.start or 0, n_steps if steps.stop is None else steps.stop
            if steps.step not in (None, 1) or not 0 <= start <= stop <= n_steps:
                raise DataError(f"{file_path}: sample {index} has {n_steps} time steps; cannot read the window "
                                f"[{start}, {stop}) (need 0 <= start <= stop <= {n_steps}, step 1)")
            selection += (slice(None),) * self.spatial_dims + (slice(start, stop),)
        try:
            raw = data[selection] if selection else data[()]
        except Exception as exc:  # h5py raises OSError/RuntimeError/KeyError for damaged files
            raise DataError(f"{file_path}: cannot read sample {index}: {exc} (truncated or corrupt file?)") from None
        return self._checked(raw, file_path, index)

    def _locate(self, index: int) -> tuple[int, Path, h5py.Dataset]:
        """(index, its file, the open ``data`` dataset), checking the index against single storage."""
        index = int(index)
        file_path = self.sample_path(index)
        if index < 0:
            raise DataError(f"{self.path}: sample index {index} is negative")
        try:
            data = self._dataset(file_path)
        except DataError as exc:
            raise DataError(f"{exc} (reading sample {index})") from None
        if not self.scatter and not 0 <= index < data.shape[0]:
            raise DataError(f"{file_path}: sample {index} requested, the file holds {data.shape[0]}")
        return index, file_path, data

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self.read(index)

    def _checked(self, raw: np.ndarray, file_path: Path, index: int) -> np.ndarray:
        shape, channel_axis = self._sample_shape(raw.shape, file_path, index)
        if not is_float_dtype(raw.dtype):
            raise DataError(f"{file_path}: sample {index} has dtype {raw.dtype}; expected a floating-point "
                            "type (float32 or float64)")
        sample = np.asarray(raw, dtype=np.float32).reshape(shape)
        if not np.isfinite(sample).all():
            bad = ~np.isfinite(sample)
            raise DataError(f"{file_path}: sample {index} has {int(bad.sum())} NaN/Inf values "
                            f"(first at {_first_index(bad)} of {_layout(self.spatial_dims, False)})")
        return sample


def _first_index(flags: np.ndarray) -> tuple[int, ...]:
    """Index of the first True element of ``flags`` as plain ints."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(flags)), flags.shape))


def is_float_dtype(dtype: np.dtype) -> bool:
    """Whether stored ``data`` of this dtype follows the protocol (real floating point)."""
    return np.issubdtype(dtype, np.floating)


def _layout(spatial_dims: int, with_n: bool) -> str:
    axes = ["X", "Y", "Z"][:spatial_dims] + ["T", "C"]
    return "[" + ", ".join((["N"] if with_n else []) + axes) + "]"


def _open(file_path: Path) -> h5py.File:
    if not file_path.exists():
        raise DataError(f"{file_path}: no such file")
    if file_path.is_dir():
        raise DataError(f"{file_path}: is a directory, expected an HDF5 file (is the catalogue's "
                        "`scatter` flag right?)")
    try:
        return h5py.File(file_path, "r")
    except Exception as exc:  # OSError for bad signatures/truncation
        raise DataError(f"{file_path}: not a readable HDF5 file ({exc})") from None


def _data_of(handle: h5py.File, file_path: Path) -> h5py.Dataset:
    try:
        data = handle.get(DATA_KEY)
    except Exception as exc:
        raise DataError(f"{file_path}: cannot read the 'data' entry ({exc}; corrupt file?)") from None
    if not isinstance(data, h5py.Dataset):
        found = ", ".join(sorted(handle.keys())) or "nothing"
        what = "is not a dataset" if data is not None else "is missing"
        raise DataError(f"{file_path}: the 'data' array {what} (found: {found}); the protocol "
                        "needs exactly one dataset named 'data'")
    return data

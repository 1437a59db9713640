"""PDEBench files -> scatter splits: compressible NS (2-D, 512, 3-D), shallow water, diffusion-reaction.

* ``pdebench-cfd``: root datasets ``Vx, Vy, density, pressure`` ``[N, T, X, Y]`` (3-D: plus ``Vz``,
  ``[N, T, X, Y, Z]``). One trajectory -> ``[X, Y, T, 4]`` in channel order
  [Vx, Vy, density, pressure]; 3-D -> ``[X, Y, Z, T, 5]`` in order [Vx, Vy, Vz, **pressure,
  density**] (the original swaps the last two in 3-D).
* ``pdebench-swe`` / ``pdebench-dr``: one group per trajectory, ``"0000"``, ``"0001"``, ... (read by
  number, so the names must be contiguous), each with ``data`` ``[T, X, Y, C]`` -> ``[X, Y, T, C]``.
  DR is stored ``[T, Y, X, 2]`` by its generator; the order is kept (-> ``[Y, X, T, 2]``).

Split (the original's): train = samples ``0 .. int(0.9 N) - 1``, test = the rest. ``n_train`` /
``n_test`` override: the first ``n_train`` samples train, the next ``n_test`` test.
One trajectory is read at a time (a 512 file is ~5 GB per field).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from moepot.data.converters.outputs import (
    OutputTarget,
    check_channels,
    dataset_keys,
    raw_identity,
    require_samples,
    write_scatter,
)
from moepot.errors import DataError

CFD_FIELDS_2D = ("Vx", "Vy", "density", "pressure")
CFD_FIELDS_3D = ("Vx", "Vy", "Vz", "pressure", "density")
TRAIN_FRACTION = 0.9


def open_hdf5(raw_path: Path, expected: str) -> h5py.File:
    """Open ``raw_path`` read-only, or raise a DataError saying which file was ``expected``."""
    if raw_path.is_dir():
        raise DataError(f"{raw_path} is a directory; expected a {expected}")
    try:
        return h5py.File(raw_path, "r")
    except OSError as exc:
        raise DataError(f"{raw_path}: not a readable HDF5 file ({exc}); expected a {expected}") from exc


def split_counts(
    raw_file: Path, key: str, available: int, n_train: int | None, n_test: int | None
) -> tuple[int, int]:
    """The original's split (first 90 % train, rest test) with optional overrides, checked."""
    n_train = int(TRAIN_FRACTION * available) if n_train is None else n_train
    n_test = max(0, available - n_train) if n_test is None else n_test
    require_samples(raw_file, key, available, n_train, n_test, "first n_train train, next n_test test")
    return n_train, n_test


def write_train_test(
    raw_path: Path,
    target: OutputTarget,
    n_train: int,
    n_test: int,
    read_sample: Callable[[int], np.ndarray],
    progress: bool,
) -> list[Path]:
    """Write raw samples ``0..n_train-1`` to train and ``n_train..n_train+n_test-1`` to test."""
    raw = raw_identity(raw_path)
    train = write_scatter(
        target.train_path,
        n_train,
        read_sample,
        lambda k: f"{raw} sample {k}",
        desc=f"{target.name} train",
        progress=progress,
    )
    test = write_scatter(
        target.test_path,
        n_test,
        lambda k: read_sample(n_train + k),
        lambda k: f"{raw} sample {n_train + k}",
        desc=f"{target.name} test",
        progress=progress,
    )
    return train + test


def convert_cfd(
    raw_path: Path, target: OutputTarget, n_train: int | None, n_test: int | None, progress: bool
) -> list[Path]:
    """PDEBench compressible NS (``2D_CFD_*`` / ``3D_CFD_*``) -> ``[X, Y(, Z), T, C]`` per trajectory."""
    expected = "PDEBench 2D_CFD_*/3D_CFD_*.hdf5 file with root datasets Vx, Vy, density, pressure"
    with open_hdf5(raw_path, expected) as f:
        fields = CFD_FIELDS_3D if "Vz" in f else CFD_FIELDS_2D
        missing = [key for key in fields if not isinstance(f.get(key), h5py.Dataset)]
        if missing:
            raise DataError(
                f"{raw_path}: missing dataset(s) {missing} (found {dataset_keys(f)}); expected a {expected}"
            )
        shape = f[fields[0]].shape  # [N, T, X, Y(, Z)]
        n_space = len(fields) - 2  # 2-D: 4 fields, 3-D: 5 fields
        if len(shape) != 2 + n_space:
            raise DataError(
                f"{raw_path}: dataset '{fields[0]}' has shape {shape}; expected {2 + n_space} axes "
                f"(N, T, {', '.join('XYZ'[:n_space])})"
            )
        for key in fields[1:]:
            if f[key].shape != shape:
                raise DataError(
                    f"{raw_path}: dataset '{key}' has shape {f[key].shape} but '{fields[0]}' has "
                    f"{shape}; expected all fields to share one shape"
                )
        check_channels(target, len(fields), raw_path, "+".join(fields))
        n_train, n_test = split_counts(raw_path, fields[0], shape[0], n_train, n_test)
        # [T, X, Y(, Z), C] -> [X, Y(, Z), T, C]
        to_protocol = (*range(1, n_space + 1), 0, n_space + 1)

        def read_sample(index: int) -> np.ndarray:
            stacked = np.stack([np.asarray(f[key][index], dtype=np.float32) for key in fields], axis=-1)
            return stacked.transpose(to_protocol)

        return write_train_test(raw_path, target, n_train, n_test, read_sample, progress)


def _convert_grouped(
    raw_path: Path,
    target: OutputTarget,
    n_train: int | None,
    n_test: int | None,
    progress: bool,
    expected: str,
) -> list[Path]:
    """Shared by SWE and DR: groups ``"0000".."N-1"``, each ``data: [T, A, B, C] -> [A, B, T, C]``."""
    with open_hdf5(raw_path, expected) as f:
        # trajectories are the root members named by a number (the original counts every root
        # member, so a file with any other member there fails in its code; here it is ignored)
        n = sum(name.isdigit() for name in f)
        names = [f"{i:04d}" for i in range(max(n, 1))]  # no numbered member: '0000' is missing
        for group in names:
            if not isinstance(f.get(group), h5py.Group) or not isinstance(f[group].get("data"), h5py.Dataset):
                found = dataset_keys(f)
                raise DataError(
                    f"{raw_path}: no group '{group}' with a dataset 'data' (root holds {found[:6]}"
                    f"{' ...' if len(found) > 6 else ''}); expected a {expected} with groups "
                    "'0000', '0001', ... numbered without gaps"
                )
        shape = f[names[0]]["data"].shape
        if len(shape) != 4:
            raise DataError(
                f"{raw_path}: '{names[0]}/data' has shape {shape}; expected a {expected}, 'data' with "
                "4 axes (T, X, Y, C)"
            )
        for group in names:
            if f[group]["data"].shape != shape:
                raise DataError(
                    f"{raw_path}: '{group}/data' has shape {f[group]['data'].shape}, '{names[0]}/data' "
                    f"has {shape}; expected one shape for every sample"
                )
        check_channels(target, shape[-1], raw_path, f"{names[0]}/data")
        n_train, n_test = split_counts(raw_path, "0000..", n, n_train, n_test)

        def read_sample(index: int) -> np.ndarray:
            return np.asarray(f[names[index]]["data"], dtype=np.float32).transpose(1, 2, 0, 3)

        return write_train_test(raw_path, target, n_train, n_test, read_sample, progress)


def convert_swe(
    raw_path: Path, target: OutputTarget, n_train: int | None, n_test: int | None, progress: bool
) -> list[Path]:
    """PDEBench radial dam break (``2D_rdb_NA_NA.h5``): depth h, ``[X, Y, T, 1]`` per trajectory."""
    return _convert_grouped(
        raw_path, target, n_train, n_test, progress, "PDEBench 2D_rdb_NA_NA.h5 file (shallow water)"
    )


def convert_dr(
    raw_path: Path, target: OutputTarget, n_train: int | None, n_test: int | None, progress: bool
) -> list[Path]:
    """PDEBench diffusion-reaction (``2D_diff-react_NA_NA.h5``): [u, v], ``[Y, X, T, 2]`` per trajectory."""
    return _convert_grouped(
        raw_path, target, n_train, n_test, progress, "PDEBench 2D_diff-react_NA_NA.h5 file"
    )

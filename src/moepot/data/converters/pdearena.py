"""PDEArena folders -> scatter splits: Navier-Stokes smoke (standard and conditioned), shallow water.

* ``pdearena-ns``: every ``*.h5`` under RAW_PATH (recursively, in sorted path order). A file's
  split comes from its NAME, checked in the order 'test' -> test, 'train' -> train,
  'valid' -> train (valid joins train). It holds one group named after its mode
  (``train``/``valid``/``test``) with ``u, vx, vy: [n, T, X, Y]``; trajectory -> ``[X, Y, T, 3]``
  in channel order [u, vx, vy]. Conditioned files differ only in T (56 instead of 14).
* ``pdearena-sw``: every ``output.nc`` (NetCDF4 = HDF5) under RAW_PATH, split by the folder path
  below RAW_PATH ('test' -> test, 'train'/'valid' -> train); ``u, v, div, vor: [T, 1, H, W]``
  (level 0 kept) and ``pres: [T, H, W]`` -> ``[H, W, T, 5]`` in order [u, v, div, vor, pres].

Output numbering: a running counter per split over the sorted files. ``n_train`` / ``n_test``
cap the number of trajectories written per split (default: all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
from moepot.data.converters.pdebench import open_hdf5
from moepot.errors import DataError

NS_FIELDS = ("u", "vx", "vy")
SW_LEVEL_FIELDS = ("u", "v", "div", "vor")  # [T, 1, H, W]
SW_SURFACE_FIELDS = ("pres",)  # [T, H, W]
MODE_TO_SPLIT = (("test", "test"), ("train", "train"), ("valid", "train"))  # checked in this order


@dataclass(frozen=True)
class Trajectory:
    """Where one output trajectory comes from: ``file`` (group ``mode``), index ``index`` in it."""

    file: Path
    mode: str
    index: int


def classify(text: str) -> str | None:
    """The mode ('test', 'train', 'valid') named in ``text``, 'test' winning; None if none is."""
    for mode, _ in MODE_TO_SPLIT:
        if mode in text:
            return mode
    return None


def _split_of(mode: str) -> str:
    return dict(MODE_TO_SPLIT)[mode]


def _write_splits(
    target: OutputTarget,
    raw_path: Path,
    trajectories: dict[str, list[Trajectory]],
    n_train: int | None,
    n_test: int | None,
    read_sample: Callable[[Trajectory], np.ndarray],
    progress: bool,
) -> list[Path]:
    """Write the train/test trajectories (capped at n_train / n_test) as scatter files."""
    written = []
    for split, cap in (("train", n_train), ("test", n_test)):
        sources = trajectories[split]
        count = len(sources) if cap is None else cap
        require_samples(raw_path, f"{split} files", len(sources), count, 0, f"{split} trajectories")
        written += write_scatter(
            target.path(split),
            count,
            lambda k, sources=sources: read_sample(sources[k]),
            lambda k, sources=sources: f"{raw_identity(sources[k].file, raw_path)} {sources[k].mode} {sources[k].index}",
            desc=f"{target.name} {split}",
            progress=progress,
        )
    return written


def _require_dir(raw_path: Path, expected: str) -> None:
    if not raw_path.is_dir():
        raise DataError(f"{raw_path} is not a directory; expected a {expected}")


def _ns_file_trajectories(file: Path) -> list[Trajectory]:
    """The trajectories of one NS ``.h5`` file, after checking its group and fields."""
    mode = classify(file.name)
    if mode is None:
        raise DataError(
            f"{file}: file name names no split; expected 'train', 'valid' or 'test' in it "
            "(PDEArena NavierStokes2D_{mode}_{seed}_{buoyancy}.h5)"
        )
    with open_hdf5(file, "PDEArena NavierStokes2D .h5 file") as f:
        group = f.get(mode)
        if not isinstance(group, h5py.Group):
            raise DataError(
                f"{file}: no group '{mode}' (found {dataset_keys(f)}); expected a group named after the split in the file name"
            )
        missing = [key for key in NS_FIELDS if not isinstance(group.get(key), h5py.Dataset)]
        if missing:
            raise DataError(
                f"{file}: group '{mode}' lacks {missing} (found {dataset_keys(group)}); expected {list(NS_FIELDS)}"
            )
        shape = group[NS_FIELDS[0]].shape
        for key in NS_FIELDS:
            if len(group[key].shape) != 4 or group[key].shape != shape:
                raise DataError(
                    f"{file}: '{mode}/{key}' has shape {group[key].shape}; expected (n, T, X, Y) "
                    f"shared by {list(NS_FIELDS)} ('{mode}/{NS_FIELDS[0]}' is {shape})"
                )
        return [Trajectory(file, mode, k) for k in range(shape[0])]


def _read_ns(source: Trajectory) -> np.ndarray:
    """``[X, Y, T, 3]`` (u, vx, vy) of one NS trajectory."""
    with h5py.File(source.file, "r") as f:
        group = f[source.mode]
        stacked = np.stack(
            [np.asarray(group[key][source.index], dtype=np.float32) for key in NS_FIELDS], axis=-1
        )
    return stacked.transpose(1, 2, 0, 3)


def convert_ns(
    raw_path: Path, target: OutputTarget, n_train: int | None, n_test: int | None, progress: bool
) -> list[Path]:
    """PDEArena NavierStokes2D smoke (standard or conditioned) folder -> ``[X, Y, T, 3]`` per trajectory."""
    expected = "PDEArena NavierStokes2D folder of *.h5 files"
    _require_dir(raw_path, expected)
    check_channels(target, len(NS_FIELDS), raw_path, "u, vx, vy")
    files = sorted(raw_path.rglob("*.h5"))
    if not files:
        raise DataError(f"{raw_path}: no *.h5 files found; expected a {expected}")
    trajectories: dict[str, list[Trajectory]] = {"train": [], "test": []}
    for file in files:
        for source in _ns_file_trajectories(file):
            trajectories[_split_of(source.mode)].append(source)
    return _write_splits(target, raw_path, trajectories, n_train, n_test, _read_ns, progress)


def _check_sw_file(file: Path) -> None:
    with open_hdf5(file, "PDEArena ShallowWater2D output.nc (NetCDF4) file") as f:
        missing = [
            key for key in SW_LEVEL_FIELDS + SW_SURFACE_FIELDS if not isinstance(f.get(key), h5py.Dataset)
        ]
        if missing:
            raise DataError(f"{file}: missing variable(s) {missing} (found {dataset_keys(f)})")
        first = f[SW_LEVEL_FIELDS[0]].shape
        if len(first) != 4:
            raise DataError(f"{file}: '{SW_LEVEL_FIELDS[0]}' has shape {first}; expected (T, level, H, W)")
        n_time, _, height, width = first
        for key in SW_LEVEL_FIELDS:
            if f[key].shape != first:
                raise DataError(
                    f"{file}: '{key}' has shape {f[key].shape}; expected (T, level, H, W) = {first}"
                )
        for key in SW_SURFACE_FIELDS:
            if f[key].shape != (n_time, height, width):
                raise DataError(
                    f"{file}: '{key}' has shape {f[key].shape}; expected (T, H, W) = ({n_time}, {height}, {width})"
                )


def _read_sw(source: Trajectory) -> np.ndarray:
    """``[H, W, T, 5]`` (u, v, div, vor, pres) of one shallow-water run."""
    with h5py.File(source.file, "r") as f:
        fields = [np.asarray(f[key][:, 0], dtype=np.float32) for key in SW_LEVEL_FIELDS]
        fields += [np.asarray(f[key], dtype=np.float32) for key in SW_SURFACE_FIELDS]
    return np.stack(fields, axis=-1).transpose(1, 2, 0, 3)


def convert_sw(
    raw_path: Path, target: OutputTarget, n_train: int | None, n_test: int | None, progress: bool
) -> list[Path]:
    """PDEArena ShallowWater2D folder (``{train,valid,test}/seed=*/run*/output.nc``) -> ``[H, W, T, 5]``."""
    expected = "PDEArena ShallowWater2D folder with {train,valid,test}/seed=*/run*/output.nc"
    _require_dir(raw_path, expected)
    check_channels(target, len(SW_LEVEL_FIELDS) + len(SW_SURFACE_FIELDS), raw_path, "u, v, div, vor, pres")
    files = sorted(raw_path.rglob("*.nc"))
    if not files:
        raise DataError(f"{raw_path}: no *.nc files found; expected a {expected}")
    trajectories: dict[str, list[Trajectory]] = {"train": [], "test": []}
    for file in files:
        folder = file.parent.relative_to(raw_path).as_posix()
        mode = classify(folder)
        if mode is None:
            raise DataError(
                f"{file}: its folder '{folder}' names no split; expected 'train', 'valid' or 'test' in it"
            )
        _check_sw_file(file)
        trajectories[_split_of(mode)].append(Trajectory(file, mode, 0))
    return _write_splits(target, raw_path, trajectories, n_train, n_test, _read_sw, progress)

"""Tiny protocol datasets with a known solution, for the training and evaluation tests.

Every trajectory decays geometrically: ``u[x, y, t, c] = rate**t * u0[x, y, c]`` with a smooth
random ``u0`` (so a model can learn the map and the exact errors of simple predictors are known
in closed form). Files follow the protocol (single storage, ``[N, X, Y, T, C]``) and a
``catalog.yaml`` layer is recorded at the data root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moepot.data.catalog import record_entries
from moepot.data.protocol import write_single


def decay_trajectories(n: int, size: int, t_total: int, channels: int, rate: float, seed: int,
                       constant: bool = False) -> np.ndarray:
    """``[n, size, size, t_total, channels]`` float32 geometric decay of smooth (or, with
    ``constant``, spatially constant) fields."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 2 * np.pi, size, endpoint=False)
    gx, gy = np.meshgrid(grid, grid, indexing="ij")
    u0 = np.empty((n, size, size, channels))
    for i in range(n):
        for c in range(channels):
            a, b, phase = rng.uniform(0.5, 1.5, size=3)
            u0[i, :, :, c] = 2.0 + a if constant else 2.0 + a * np.sin(gx + phase) + b * np.cos(gy - phase)
    powers = rate ** np.arange(t_total)
    return (u0[:, :, :, None, :] * powers[None, None, None, :, None]).astype(np.float32)


def write_decay_dataset(
    data_root: Path,
    name: str,
    *,
    n_train: int = 8,
    n_test: int = 4,
    size: int = 16,
    t_total: int = 8,
    t_in: int = 4,
    t_test: int = 3,
    channels: int = 1,
    rate: float = 0.9,
    seed: int = 0,
    pred_channels: int | None = None,
    constant: bool = False,
) -> None:
    """Write ``<root>/<name>_{train,test}.hdf5`` and record the catalogue entry ``name``."""
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 1000)):
        write_single(data_root / f"{name}_{split}.hdf5",
                     decay_trajectories(n, size, t_total, channels, rate, seed + offset, constant))
    entry = {
        "train_path": f"{name}_train.hdf5",
        "test_path": f"{name}_test.hdf5",
        "train_size": n_train,
        "test_size": n_test,
        "scatter": False,
        "t_in": t_in,
        "t_test": t_test,
        "t_total": t_total,
        "in_size": [size, size],
        "n_channels": channels,
        "downsample": [1, 1],
    }
    if pred_channels is not None:
        entry["pred_channels"] = pred_channels
    record_entries(data_root, {name: entry})


def write_decay_mixture(data_root: Path, n_train: int = 12) -> None:
    """The two-dataset training mixture of the training tests: ``decay_a`` (1 channel, rate 0.8)
    and ``decay_b`` (2 channels, rate 0.95), ``n_train`` trajectories each."""
    write_decay_dataset(data_root, "decay_a", n_train=n_train, rate=0.8, seed=1)
    write_decay_dataset(data_root, "decay_b", n_train=n_train, rate=0.95, channels=2, seed=2)

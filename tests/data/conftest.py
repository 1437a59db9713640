"""Tiny protocol files for data tests: a factory that writes datasets plus a catalogue for them.

The files are written with plain h5py the way the original code wrote them (unchunked, one
``data`` array), not with :mod:`moepot.data.protocol`, so reader tests do not depend on our
writers. Values are random, so a window or a sample is identified by its values alone.

Usage::

    def test_something(tiny_data):
        ds = tiny_data.add("toy", n_train=4, n_test=2, size=(8, 6), steps=14, channels=2)
        catalog = tiny_data.catalog()          # built-in entries + the tiny ones
        ds.train                                # [N, X, Y, T, C] as written (the truth)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml


@dataclass
class TinyDataset:
    """One written dataset: its catalogue fields and the arrays as written.

    ``train``/``test`` are ``[N, X, Y, T, C]`` float64 (with a channel axis even when the files
    have none), i.e. the values a reader must return (up to float32 rounding).
    """

    name: str
    fields: dict[str, Any]
    train: np.ndarray
    test: np.ndarray
    train_path: Path
    test_path: Path

    def array(self, split: str) -> np.ndarray:
        return self.train if split == "train" else self.test

    def path(self, split: str) -> Path:
        return self.train_path if split == "train" else self.test_path


@dataclass
class TinyDataFactory:
    """Writes tiny datasets under ``data_root`` and lists them in ``catalog_file`` (a user catalogue)."""

    data_root: Path
    catalog_file: Path
    seed: int = 0
    datasets: dict[str, TinyDataset] = field(default_factory=dict)

    def add(self, name: str, *, n_train: int = 4, n_test: int = 2, size: tuple[int, int] = (8, 8),
            steps: int = 14, channels: int = 2, scatter: bool = False, channel_axis: bool = True,
            dtype: str = "float32", chunked: bool = False, t_in: int = 4, t_test: int | None = None,
            catalog_sizes: tuple[int, int] | None = None, **extra_fields: Any) -> TinyDataset:
        """Write train and test splits of random data ``[N, *size, steps, channels]``.

        Args:
            scatter: one ``data_{i}.hdf5`` per sample instead of one file per split.
            channel_axis: False writes ``[N, X, Y, T]`` (only with ``channels=1``).
            chunked: one HDF5 chunk per sample (our writers' layout) instead of contiguous.
            t_in, t_test: catalogue facts (``t_test`` default: ``steps - t_in``).
            catalog_sizes: (train_size, test_size) for the catalogue (default: what is written).
            extra_fields: further catalogue fields (``pred_channels``, ``downsample``, ...).
        """
        assert channel_axis or channels == 1
        rng = np.random.default_rng([self.seed, len(self.datasets)])
        arrays = {split: rng.standard_normal((n, *size, steps, channels)).astype(dtype)
                  for split, n in (("train", n_train), ("test", n_test))}
        paths = {}
        for split, array in arrays.items():
            stored = array if channel_axis else array[..., 0]
            relative = f"tiny/{name}/{split}" if scatter else f"tiny/{name}_{split}.hdf5"
            paths[split] = self.data_root / relative
            if scatter:
                paths[split].mkdir(parents=True, exist_ok=True)
                for i, sample in enumerate(stored):
                    write_raw(paths[split] / f"data_{i}.hdf5", sample)
            else:
                write_raw(paths[split], stored, chunks=(1, *stored.shape[1:]) if chunked and len(stored) else None)
        fields: dict[str, Any] = {
            "train_path": str(paths["train"].relative_to(self.data_root)),
            "test_path": str(paths["test"].relative_to(self.data_root)),
            "train_size": n_train if catalog_sizes is None else catalog_sizes[0],
            "test_size": n_test if catalog_sizes is None else catalog_sizes[1],
            "scatter": scatter, "t_in": t_in, "t_test": steps - t_in if t_test is None else t_test,
            "t_total": steps, "in_size": list(size), "n_channels": channels, **extra_fields,
        }
        self.set_fields(name, fields)
        dataset = TinyDataset(name, fields, arrays["train"].astype(np.float64), arrays["test"].astype(np.float64),
                              paths["train"], paths["test"])
        self.datasets[name] = dataset
        return dataset

    def set_fields(self, name: str, fields: dict[str, Any]) -> None:
        """Write (or replace) ``name``'s entry in the user catalogue file."""
        current = yaml.safe_load(self.catalog_file.read_text()) if self.catalog_file.exists() else None
        current = current or {}
        current[name] = fields
        self.catalog_file.write_text(yaml.safe_dump(current, sort_keys=False))

    def catalog(self):
        from moepot.data.catalog import load_catalog

        return load_catalog(catalog_file=self.catalog_file, data_root=self.data_root)


def write_raw(path: Path, array: np.ndarray | None, *, key: str = "data", chunks: tuple[int, ...] | None = None) -> Path:
    """Write an HDF5 file with ``array`` under ``key`` using plain h5py (no checks: for hostile files too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if array is not None:
            f.create_dataset(key, data=array, chunks=chunks)
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> TinyDataFactory:
    """A factory writing tiny datasets under ``tmp_path/root`` with a user catalogue ``tmp_path/tiny.yaml``."""
    root = tmp_path / "root"
    root.mkdir()
    return TinyDataFactory(data_root=root, catalog_file=tmp_path / "tiny.yaml")


@pytest.fixture
def write_h5():
    """``write_h5(path, array, key="data", chunks=None)``: a plain h5py writer for raw and hostile files."""
    return write_raw


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No MOEPOT_DATA_ROOT / MOEPOT_CATALOG from the caller's environment (for every data test)."""
    monkeypatch.delenv("MOEPOT_DATA_ROOT", raising=False)
    monkeypatch.delenv("MOEPOT_CATALOG", raising=False)
    return monkeypatch

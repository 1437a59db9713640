"""Tiny raw files in the original public layouts (raw-formats.md §11), with index-encoding values.

Every builder fills its arrays from an explicit code of the sample/time/space/channel indices,
so a test can state where each raw element must land after conversion without reusing the
converter's own permutation. Spatial sizes are non-square and every axis has its own length,
so an axis mix-up changes shapes or values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------
# Index codes (exact in float32 for the sizes used here)


def fno_code(n, t, p, q):
    """FNO vorticity at sample n, frame t, h5py spatial indices (p, q) of ``u[t, p, q, n]``."""
    return 1_000_000 * n + 10_000 * t + 100 * p + q


def cfd_code(channel, n, t, x, y, z=0):
    """PDEBench CFD field value; ``channel`` indexes the RAW field name (see CFD_RAW_FIELDS)."""
    return 1_000_000 * channel + 100_000 * n + 1_000 * t + 100 * x + 10 * y + z


def group_code(n, t, a, b, c):
    """SWE/DR ``data[t, a, b, c]`` of group n."""
    return 100_000 * n + 1_000 * t + 100 * a + 10 * b + c


def arena_code(file_id, field, k, t, x, y):
    """PDEArena NS field ``field`` (0 u, 1 vx, 2 vy) of trajectory k in file ``file_id``."""
    return 10_000_000 * file_id + 1_000_000 * field + 100_000 * k + 1_000 * t + 10 * x + y


def sw_code(run_id, field, t, h, w):
    """PDEArena SW variable ``field`` (order u, v, div, vor, pres) of run ``run_id``."""
    return 100_000 * run_id + 10_000 * field + 100 * t + 10 * h + w


def from_code(code: Callable, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """Array of ``shape`` with element ``idx`` = ``code(*idx)``."""
    return np.fromfunction(lambda *idx: code(*idx), shape, dtype=np.int64).astype(dtype)


CFD_RAW_FIELDS_2D = ("Vx", "Vy", "density", "pressure")
CFD_RAW_FIELDS_3D = ("Vx", "Vy", "Vz", "density", "pressure")  # raw codes; output swaps the last two


# ---------------------------------------------------------------------------------------------
# Builders


def write_fno_v73(path: Path, n: int = 5, t: int = 12, s2: int = 6, s1: int = 8) -> Path:
    """MATLAB v7.3 file as h5py sees it: ``u [T, S2, S1, N]``, ``a [S2, S1, N]``, ``t [T, 1]``."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f["u"] = from_code(lambda ti, p, q, ni: fno_code(ni, ti, p, q), (t, s2, s1, n))
        f["a"] = np.zeros((s2, s1, n), np.float32)
        f["t"] = np.arange(1, t + 1, dtype=np.float32).reshape(t, 1)
        for key in ("u", "a", "t"):
            f[key].attrs["MATLAB_class"] = np.bytes_(b"single")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")
    return path


def write_fno_v5(path: Path, n: int = 5, t: int = 12, s2: int = 6, s1: int = 8) -> Path:
    """The same MATLAB array saved as a v5 file: natural order ``u(n, i, j, t)``, i < S1, j < S2.

    MATLAB ``u(n, i, j, t)`` is h5py ``u[t, j, i, n]`` in a v7.3 file, so its value is
    ``fno_code(n, t, p=j, q=i)``.
    """
    import scipy.io

    u = from_code(lambda ni, i, j, ti: fno_code(ni, ti, j, i), (n, s1, s2, t))
    scipy.io.savemat(path, {"u": u, "a": np.zeros((n, s1, s2), np.float32)})
    return path


def write_pdebench_cfd(path: Path, n: int = 10, t: int = 21, spatial: tuple[int, ...] = (8, 6)) -> Path:
    """Root datasets ``[N, T, X, Y(, Z)]`` float32 + coordinates + attributes."""
    fields = CFD_RAW_FIELDS_3D if len(spatial) == 3 else CFD_RAW_FIELDS_2D
    with h5py.File(path, "w") as f:
        for channel, key in enumerate(fields):
            f[key] = from_code(lambda *idx, c=channel: cfd_code(c, *idx), (n, t, *spatial))
        for axis, size in zip("xyz", spatial):
            f[f"{axis}-coordinate"] = (np.arange(size, dtype=np.float32) + 0.5) / size
        f["t-coordinate"] = np.arange(t + 1, dtype=np.float32) * 0.05
        f.attrs.update({"eta": 0.1, "zeta": 0.1, "M": 1.0})
    return path


def write_pdebench_grouped(path: Path, n: int = 10, data_shape=(11, 8, 6, 1), compression=None) -> Path:
    """Groups ``'0000'..`` each with ``data [T, A, B, C]``, ``grid/{x,y,t}`` and a ``config`` attr."""
    t, a, b, _ = data_shape
    with h5py.File(path, "w") as f:
        for i in range(n):
            group = f.create_group(f"{i:04d}")
            group.create_dataset(
                "data",
                data=from_code(lambda *idx, i=i: group_code(i, *idx), data_shape),
                compression=compression,
            )
            group["grid/x"] = np.linspace(-1, 1, b if compression else a, dtype=np.float32)
            group["grid/y"] = np.linspace(-1, 1, a if compression else b, dtype=np.float32)
            group["grid/t"] = np.linspace(0, 1, t, dtype=np.float32)
            group.attrs["config"] = "sim: test\n"
    return path


def write_pdearena_ns_file(
    path: Path, mode: str, file_id: int, n: int = 2, t: int = 14, x: int = 8, y: int = 6
) -> Path:
    """One ``NavierStokes2D_*.h5`` with group ``mode`` holding ``u, vx, vy [n, T, X, Y]`` float64."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        group = f.create_group(mode)
        for field, key in enumerate(("u", "vx", "vy")):
            group[key] = from_code(
                lambda *idx, fl=field: arena_code(file_id, fl, *idx), (n, t, x, y), np.float64
            )
        group["t"] = np.tile(np.linspace(18, 102, t), (n, 1))
        group["x"] = np.tile(np.linspace(0, 32, x), (n, 1))
        group["y"] = np.tile(np.linspace(0, 32, y), (n, 1))
        for key, value in (("dt", 6.0), ("dx", 32 / 127), ("dy", 32 / 127), ("buo_y", 0.5)):
            group[key] = np.full(n, value)
    return path


def write_pdearena_sw_run(path: Path, run_id: int, t: int = 5, h: int = 4, w: int = 6) -> Path:
    """One ``output.nc`` written with h5py: ``u, v, div, vor [T, 1, H, W]``, ``pres [T, H, W]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for field, key in enumerate(("u", "v", "div", "vor")):
            values = from_code(lambda *idx, fl=field: sw_code(run_id, fl, *idx), (t, h, w))
            f[key] = values[:, None]
        f["pres"] = from_code(lambda *idx: sw_code(run_id, 4, *idx), (t, h, w))
    return path


def write_cfdbench_case(
    folder: Path, problem: str, case_id: int, n_frames: int, height: int, width: int, params: dict
) -> Path:
    """``caseNNNN/{u.npy, v.npy, case.json}``: u[t, i, j] = 10000 t + 100 i + j, v = 1000 case_id + t."""
    folder.mkdir(parents=True, exist_ok=True)
    u = from_code(lambda t, i, j: 10_000 * t + 100 * i + j, (n_frames, height, width), np.float64)
    v = from_code(lambda t, i, j: 1_000 * case_id + t + 0 * i, (n_frames, height, width), np.float64)
    np.save(folder / "u.npy", u)
    np.save(folder / "v.npy", v)
    (folder / "case.json").write_text(json.dumps(params))
    return folder


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    return raw


@pytest.fixture(scope="session")
def raw():
    """The builders and index codes of this file, for the test modules."""
    return SimpleNamespace(
        fno_code=fno_code,
        cfd_code=cfd_code,
        group_code=group_code,
        arena_code=arena_code,
        sw_code=sw_code,
        from_code=from_code,
        write_fno_v73=write_fno_v73,
        write_fno_v5=write_fno_v5,
        write_pdebench_cfd=write_pdebench_cfd,
        write_pdebench_grouped=write_pdebench_grouped,
        write_pdearena_ns_file=write_pdearena_ns_file,
        write_pdearena_sw_run=write_pdearena_sw_run,
        write_cfdbench_case=write_cfdbench_case,
    )

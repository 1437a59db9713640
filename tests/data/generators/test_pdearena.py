"""PDEArena smoke generator (PhiFlow): projection, walls, boundedness, buoyancy, raw layout.

The simulations here are shortened (a few steps instead of 8 + 56): PhiFlow's per-step cost is
mostly Python overhead, independent of the tiny grid.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys

import h5py
import numpy as np
import pytest

from moepot.data.generators import GenerateRequest, pdearena
from moepot.errors import ConfigError

SHORT = dataclasses.replace(pdearena.SETS["ns2d_pda"], skipped=1, recorded=4, rate=2)


def test_missing_phiflow_gives_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "phi", None)  # import phi -> ImportError
    request = GenerateRequest(raw_dir=tmp_path, n_train=1, n_test=1, size=8, stored_size=8, progress=False)
    with pytest.raises(ConfigError, match="pip install"):
        pdearena.write_raw(request, name="ns2d_pda")


def test_noise_is_normalised_and_smooth():
    noise = pdearena.smoke_noise(np.random.default_rng(0), 64)
    assert noise.mean() == pytest.approx(0.0, abs=1e-12) and noise.std() == pytest.approx(1.0)
    spectrum = np.abs(np.fft.fft2(noise)) ** 2
    k = np.abs(np.fft.fftfreq(64) * 64)
    low = (k[:, None] <= 3) & (k[None, :] <= 3)
    assert spectrum[low].sum() > 0.99 * spectrum.sum()  # smoothness 6: the lowest modes dominate


requires_phiflow = pytest.mark.skipif(
    importlib.util.find_spec("phi") is None, reason="PhiFlow is optional (pip install phiflow)"
)


@pytest.fixture(scope="module")
def plume():
    smoke0 = np.stack([np.abs(pdearena.smoke_noise(np.random.default_rng(seed), 16)) for seed in range(2)])
    return smoke0, pdearena.simulate(smoke0, 0.5, SHORT)


def _divergence(vx: np.ndarray, vy: np.ndarray, h: float) -> np.ndarray:
    """Cell divergence of stored face velocities; the dropped last faces are walls (zero)."""
    vx_full = np.concatenate([vx, np.zeros_like(vx[..., :1, :])], axis=-2)
    vy_full = np.concatenate([vy, np.zeros_like(vy[..., :1])], axis=-1)
    return (np.diff(vx_full, axis=-2) + np.diff(vy_full, axis=-1)) / h


@requires_phiflow
def test_projected_velocity_is_divergence_free_with_closed_walls(plume):
    _, (u, vx, vy) = plume
    assert u.shape == vx.shape == vy.shape == (2, SHORT.n_frames, 16, 16)
    assert np.all(vx[:, :, 0, :] == 0) and np.all(vy[:, :, :, 0] == 0)  # left and bottom walls
    divergence = _divergence(vx, vy, h=32.0 / 16)
    assert np.abs(divergence).max() < 1e-4 * np.abs(vy).max()


@requires_phiflow
def test_smoke_stays_within_its_initial_bounds(plume):
    smoke0, (u, _, _) = plume
    assert u.min() >= -1e-12
    assert u.max() <= smoke0.max() + 1e-9


@requires_phiflow
def test_buoyancy_lifts_the_smoke(plume):
    smoke0, (u, _, vy) = plume
    y = np.arange(16) + 0.5
    centroid = lambda s: (s * y).sum(axis=(-2, -1)) / s.sum(axis=(-2, -1))  # noqa: E731
    assert np.all(centroid(u[:, -1]) > centroid(smoke0))
    assert vy.mean() > 0


@requires_phiflow
def test_without_buoyancy_nothing_moves():
    smoke0 = np.abs(pdearena.smoke_noise(np.random.default_rng(3), 16))[None]
    u, vx, vy = pdearena.simulate(smoke0, 0.0, dataclasses.replace(SHORT, recorded=2))
    assert np.abs(vx).max() == 0 and np.abs(vy).max() == 0
    np.testing.assert_allclose(u[0, -1], smoke0[0], atol=1e-12)


@requires_phiflow
@pytest.mark.slow
def test_raw_files_follow_the_pdearena_layout_and_convert(monkeypatch, tmp_path):
    short = dataclasses.replace(pdearena.SETS["ns2d_cond_pda"], skipped=1, recorded=2, per_file=2)
    monkeypatch.setitem(pdearena.SETS, "ns2d_cond_pda", short)
    request = GenerateRequest(
        raw_dir=tmp_path / "raw", n_train=3, n_test=1, size=8, stored_size=8, seed=1, progress=False
    )
    folder = pdearena.write_raw(request, name="ns2d_cond_pda")
    files = sorted(p.name for p in folder.glob("*.h5"))
    assert len(files) == 3 and sum("_train_" in f for f in files) == 2  # 2 + 1 train trajectories, 1 test
    buoyancies = set()
    for path in folder.glob("*.h5"):
        mode = "test" if "_test_" in path.name else "train"
        with h5py.File(path, "r") as f:
            group = f[mode]
            n = group["u"].shape[0]
            for key in ("u", "vx", "vy"):
                assert group[key].shape == (n, 2, 8, 8) and group[key].dtype == np.float64
            np.testing.assert_allclose(group["t"][0], np.linspace(18, 102, 2))
            np.testing.assert_allclose(group["x"][0], np.linspace(0, 32, 8))
            assert group["dx"][0] == pytest.approx(32 / 7)
            b = float(group["buo_y"][0])
            assert 0.2 <= b <= 0.5 and f"_{b:.5f}" in path.name
            buoyancies.add(b)
    assert len(buoyancies) == 3  # one buoyancy per file
    converters = pytest.importorskip("moepot.data.converters")
    paths = converters.convert(
        "pdearena-ns", folder, name="ns2d_cond_pda", data_root=tmp_path, progress=False
    )
    assert len(paths) == 4
    with h5py.File(paths[0], "r") as f:
        assert f["data"].shape == (8, 8, 2, 3)


def test_file_names_sort_in_trajectory_order():
    """The converter numbers trajectories in sorted file-name order, so file 10 must sort after file 9."""
    names = [pdearena._file_name("train", pdearena._file_seed(seed, i), 0.5, 32) for seed in (0, 7) for i in range(12)]
    for seed in range(2):
        own = names[12 * seed : 12 * (seed + 1)]
        assert sorted(own) == own


def test_sizes_the_solver_cannot_run_are_refused_before_anything_is_touched(tmp_path):
    from moepot.data.generators import all_generators
    from moepot.data.generators.run import build_request

    spec = all_generators()["ns2d_pda"]
    assert build_request(spec, tmp_path, size=64).stored_size == 64  # stores the simulation grid
    with pytest.raises(ConfigError, match="beyond this solver's limit"):
        build_request(spec, tmp_path, size=256)
    with pytest.raises(ConfigError, match="must equal --size 64"):
        build_request(spec, tmp_path, size=64, stored_size=32)


@requires_phiflow
@pytest.mark.filterwarnings("ignore:symmetric-gradient extrapolation is experimental")
def test_viscous_step_damps_a_sine_mode_at_the_documented_viscosity():
    """Explicit diffusion, nu = 0.01 and dt = 1.5 (raw-formats §8.3): on vx = sin(k y) the
    5-point Laplacian is exactly -(4 / h^2) sin^2(k h / 2) vx away from the walls, so one forward
    Euler step multiplies those faces by 1 - nu dt (4 / h^2) sin^2(k h / 2)."""
    from phi import flow

    math = flow.math
    n, nu, dt = 16, 0.01, 1.5
    h, k = 32.0 / n, 2 * np.pi * 2 / 32.0
    with math.precision(64):
        velocity = flow.StaggeredGrid(
            lambda p: math.stack([math.sin(k * p.vector["y"]), 0 * p.vector["x"]], math.channel(vector="x,y")),
            flow.extrapolation.ZERO,
            x=n,
            y=n,
            bounds=flow.Box(x=32.0, y=32.0),
        )
        before = velocity.staggered_tensor().numpy("x,y,vector")  # [n + 1, n + 1, 2]
        after = pdearena.viscous_step(velocity).staggered_tensor().numpy("x,y,vector")
    factor = 1 - nu * dt * 4 / h**2 * np.sin(k * h / 2) ** 2
    # vx faces two or more faces from the x walls (faces 0 and n), rows clear of the y walls
    inner = (slice(2, n - 1), slice(1, n - 1), 0)
    np.testing.assert_allclose(after[inner], factor * before[inner], rtol=1e-12)
    assert np.abs(after[..., 1]).max() == 0  # nothing diffuses into vy

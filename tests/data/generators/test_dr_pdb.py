"""Diffusion–reaction generator: the ODE limit, no-flux conservation, the Laplacian, raw layout."""

from __future__ import annotations

import h5py
import numpy as np
import yaml
from scipy.integrate import solve_ivp

from moepot.data.generators import GenerateRequest
from moepot.data.generators.dr_pdb import (
    NAME,
    ReactionParams,
    neumann_laplacian,
    noise_initial_condition,
    simulate_diffusion_reaction,
    write_raw,
)
from moepot.data.generators.run import trajectory_rng
from moepot.data.generators.swe_pdb import cell_centres

TIMES = np.linspace(0.0, 5.0, 101)


def test_without_diffusion_every_cell_follows_the_ode_pair():
    params = ReactionParams(du=0.0, dv=0.0)
    u0, v0 = noise_initial_condition(np.random.default_rng(0), 6)
    field = simulate_diffusion_reaction(u0, v0, TIMES, params, rtol=1e-9, atol=1e-11)

    def ode(_t, y):
        u, v = y
        return [u - u**3 - params.k - v, u - v]

    for iy, ix in [(0, 0), (2, 5), (5, 3)]:
        direct = solve_ivp(ode, (0, 5), [u0[iy, ix], v0[iy, ix]], method="DOP853", t_eval=TIMES,
                           rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(field[:, iy, ix, :], direct.y.T, atol=1e-6)


def test_pure_diffusion_conserves_totals_and_decays_variance():
    params = ReactionParams(reaction=False)
    u0, v0 = noise_initial_condition(np.random.default_rng(1), 12)
    field = simulate_diffusion_reaction(u0, v0, TIMES, params)  # [T, Y, X, 2]
    totals = field.sum(axis=(1, 2))
    np.testing.assert_allclose(totals, np.broadcast_to(totals[0], totals.shape), rtol=0, atol=1e-9)
    variance = field.var(axis=(1, 2))
    assert np.all(np.diff(variance, axis=0) <= 1e-12)
    assert np.all(variance[-1] < 0.5 * variance[0])


def test_laplacian_has_the_cell_centred_neumann_eigenvectors():
    # cos(π m (i + ½) / N) per axis is an exact eigenvector of the no-flux 5-point Laplacian
    size, dx = 10, 2.0 / 10
    i = np.arange(size) + 0.5
    laplacian = neumann_laplacian(size)
    for mx, my in [(0, 0), (1, 0), (2, 3), (9, 4)]:
        mode = np.outer(np.cos(np.pi * my * i / size), np.cos(np.pi * mx * i / size))  # [Y, X]
        eigenvalue = -(2 / dx**2) * ((1 - np.cos(np.pi * mx / size)) + (1 - np.cos(np.pi * my / size)))
        np.testing.assert_allclose(laplacian @ mode.ravel(), eigenvalue * mode.ravel(), atol=1e-9)


def test_frame_zero_is_the_noise_and_the_cubic_term_bounds_the_values():
    u0, v0 = noise_initial_condition(np.random.default_rng(2), 16)
    field = simulate_diffusion_reaction(u0, v0, TIMES)
    np.testing.assert_array_equal(field[0, ..., 0], u0)
    np.testing.assert_array_equal(field[0, ..., 1], v0)
    bound = max(np.abs(field[0]).max(), 1.5) + 0.05
    assert np.abs(field).max() <= bound
    assert np.abs(field[-1]).max() < 1.5  # u − u³ pulls |u| below ~1.2 within t = 5


def test_raw_file_follows_the_pdebench_layout(tmp_path):
    request = GenerateRequest(raw_dir=tmp_path, n_train=2, n_test=1, size=8, stored_size=8, seed=3, progress=False)
    path = write_raw(request)
    assert path.name == "2D_diff-react_NA_NA.h5"
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["0000", "0001", "0002"]
        group = f["0002"]  # the first test trajectory follows the training ones
        assert group["data"].compression == "lzf"
        data = group["data"][...]
        assert data.dtype == np.float32 and data.shape == (101, 8, 8, 2)
        np.testing.assert_allclose(group["grid/t"][...], TIMES, atol=1e-6)
        np.testing.assert_allclose(group["grid/y"][...], cell_centres(8, -1, 1), atol=1e-7)
        assert yaml.safe_load(group.attrs["config"])["split"] == "test"
    u0, v0 = noise_initial_condition(trajectory_rng(3, NAME, "test", 0), 8)
    expected = simulate_diffusion_reaction(u0, v0, TIMES)  # (t, y, x, c) as upstream stores it
    np.testing.assert_allclose(data, expected, rtol=1e-6, atol=1e-6)


def test_stored_grid_is_the_block_average(tmp_path):
    request = GenerateRequest(raw_dir=tmp_path, n_train=1, n_test=0, size=8, stored_size=4, seed=0,
                              progress=False)
    with h5py.File(write_raw(request), "r") as f:
        data = f["0000/data"][...]
    u0, v0 = noise_initial_condition(trajectory_rng(0, NAME, "train", 0), 8)
    fine = simulate_diffusion_reaction(u0, v0, TIMES)
    np.testing.assert_allclose(data, fine.reshape(101, 4, 2, 4, 2, 2).mean(axis=(2, 4)), rtol=1e-5, atol=1e-6)


def test_without_reaction_neumann_modes_decay_at_their_own_diffusivities():
    """u0 = v0 = cos(m π (x + 1) / 2), a no-flux eigenmode of Δ on [−1, 1] with eigenvalue
    −(m π / 2)²: u decays as exp(−Du (mπ/2)² t), v as exp(−Dv (mπ/2)² t), Du = 1e-3, Dv = 5e-3."""
    size, m = 32, 4
    x = -1 + (np.arange(size) + 0.5) * 2 / size  # cell centres
    mode = np.broadcast_to(np.cos(m * np.pi * (x + 1) / 2), (size, size))  # [Y, X]: varies along x
    params = ReactionParams(reaction=False)
    field = simulate_diffusion_reaction(mode, mode, TIMES, params, rtol=1e-8, atol=1e-10)
    amplitude = (field * mode[None, ..., None]).sum(axis=(1, 2)) / (mode**2).sum()  # [T, 2]
    rate = (m * np.pi / 2) ** 2
    # the 5-point Laplacian's eigenvalue is 1.3% below (mπ/2)² on 32 cells: ~0.3% (u), 1.3% (v) at t = 5
    np.testing.assert_allclose(amplitude[:, 0], np.exp(-1e-3 * rate * TIMES), rtol=1e-2)
    np.testing.assert_allclose(amplitude[:, 1], np.exp(-5e-3 * rate * TIMES), rtol=2e-2)

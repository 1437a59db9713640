"""FNO vorticity generator: analytic solutions, invariants, the GRF law, and the raw .mat layout."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from moepot.data.generators import GenerateRequest
from moepot.data.generators.ns2d_fno import (
    GENERATORS,
    VorticitySolver,
    grf_initial_vorticity,
    upstream_forcing,
    write_raw,
)
from moepot.data.generators.run import trajectory_rng
from moepot.errors import ConfigError


def test_forced_diagonal_field_matches_the_exact_solution():
    # w0 = 0 and f depending on x+y only: u·∇w ≡ 0, so w(t) = f/(8π²ν)·(1 − exp(−8π²νt)).
    size, nu, dt = 16, 1e-2, 0.1
    forcing = upstream_forcing(size)
    solver = VorticitySolver(size, nu, forcing, dtype=torch.float64)
    w = solver.simulate(torch.zeros(1, size, size, dtype=torch.float64), n_frames=30, interval=dt)[0]
    times = dt * torch.arange(1, 31, dtype=torch.float64)
    rate = 8 * math.pi**2 * nu
    exact = forcing[..., None] / rate * (1 - torch.exp(-rate * times))
    scale = exact.abs().max()
    assert (w - exact).abs().max() / scale < 1e-3
    assert w.mean(dim=(0, 1)).abs().max() < 1e-12 * scale  # zero-mean forcing keeps the mean at 0


def test_unforced_small_modes_decay_at_the_viscous_rates():
    size, nu, eps = 16, 1e-2, 1e-7
    modes = [(1, 0), (2, 1), (0, 3)]
    x = torch.arange(size, dtype=torch.float64) / size
    w0 = sum(eps * torch.cos(2 * math.pi * (k1 * x[:, None] + k2 * x[None, :])) for k1, k2 in modes)
    solver = VorticitySolver(size, nu, None, dtype=torch.float64)
    w = solver.simulate(w0[None], n_frames=4, interval=0.05)[0]  # [X, Y, T]
    spectrum = torch.fft.fft2(w.permute(2, 0, 1)).real / size**2  # cos amplitude / 2 at ±k
    for k1, k2 in modes:
        expected = 0.5 * eps * np.exp(-4 * math.pi**2 * nu * (k1**2 + k2**2) * 0.05 * np.arange(1, 5))
        # one Crank–Nicolson-type step per frame here: time error ~(ν|2πk|²dt)³/12 ≈ 5e-4
        np.testing.assert_allclose(spectrum[:, k1, k2].numpy(), expected, rtol=2e-3)


def test_velocity_matches_the_analytic_stream_function_solution():
    # w = Σ c cos(2π k·x): ψ = w / (4π²|k|²), u = ∂yψ, v = −∂xψ (divergence-free by construction).
    size = 16
    x = torch.arange(size, dtype=torch.float64) / size
    modes = [((1, 2), 0.7), ((3, -1), -0.4)]
    w = torch.zeros(size, size, dtype=torch.float64)
    u_exact, v_exact = torch.zeros_like(w), torch.zeros_like(w)
    for (k1, k2), c in modes:
        phase = 2 * math.pi * (k1 * x[:, None] + k2 * x[None, :])
        w += c * torch.cos(phase)
        factor = c / (4 * math.pi**2 * (k1**2 + k2**2)) * 2 * math.pi
        u_exact += -k2 * factor * torch.sin(phase)
        v_exact += k1 * factor * torch.sin(phase)
    solver = VorticitySolver(size, 1e-3, None, dtype=torch.float64)
    u, v = solver.velocity(solver.to_spectral(w[None]))
    torch.testing.assert_close(u[0], u_exact, atol=1e-13, rtol=0)
    torch.testing.assert_close(v[0], v_exact, atol=1e-13, rtol=0)


def test_unforced_inviscid_flow_conserves_energy_and_enstrophy_over_short_times():
    size = 32
    w0 = torch.from_numpy(grf_initial_vorticity(np.random.default_rng(5), size))[None]
    solver = VorticitySolver(size, 0.0, None, dtype=torch.float64)
    w = solver.simulate(w0, n_frames=2, interval=0.5)
    enstrophy = (w**2).mean(dim=(1, 2))[0]
    assert torch.allclose(enstrophy, (w0**2).mean(), rtol=1e-3)
    energy0 = sum((c**2).mean() for c in solver.velocity(solver.to_spectral(w0)))
    energy = sum((c**2).mean() for c in solver.velocity(solver.to_spectral(w[..., -1])))
    assert abs(energy / energy0 - 1) < 1e-3


def test_grf_variance_matches_the_upstream_spectrum():
    size, alpha, tau = 32, 2.5, 7.0
    samples = np.stack([grf_initial_vorticity(np.random.default_rng(i), size) for i in range(200)])
    k = np.fft.fftfreq(size, d=1.0 / size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    scale2 = 2 * tau ** (2 * alpha - 2) * (4 * math.pi**2 * k2 + tau**2) ** (-alpha)
    scale2[0, 0] = 0.0
    expected_variance = scale2.sum()  # Var Re(Σ s_k ξ_k e^{ik·x}) with Re ξ, Im ξ ~ N(0, 1)
    assert abs(samples.var() / expected_variance - 1) < 0.1
    assert abs(samples.mean(axis=(1, 2))).max() < 1e-12  # the zero mode is dropped


def test_raw_file_is_matlab_v73_in_the_upstream_layout(tmp_path):
    name = "ns2d_fno_1e-3"
    request = GenerateRequest(raw_dir=tmp_path, n_train=2, n_test=1, size=16, stored_size=8, seed=4, progress=False)
    path = write_raw(request, name=name, dtype=torch.float64)
    assert path.name == "NavierStokes_V1e-3_N3_T50.mat"
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        u, a, t = f["u"][...], f["a"][...], f["t"][...]
        assert f["u"].dtype == np.float32
    assert u.shape == (50, 8, 8, 3) and a.shape == (8, 8, 3) and t.shape == (50, 1)
    np.testing.assert_array_equal(t[:, 0], np.arange(1, 51))
    # second run of the solver on the last (test) trajectory: MATLAB (n, x, y, t) = h5py [t, y, x, n]
    w0 = grf_initial_vorticity(trajectory_rng(4, name, "test", 0), 16)
    solver = VorticitySolver(16, 1e-3, upstream_forcing(16, torch.float64), dtype=torch.float64)
    w = solver.simulate(torch.from_numpy(w0)[None], 50)[0].numpy()  # [X, Y, T]
    np.testing.assert_allclose(u[:, :, :, 2], w[::2, ::2, :].transpose(2, 1, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[:, :, 2], w0[::2, ::2].T, rtol=1e-6, atol=1e-6)
    assert not np.allclose(u[0, :, :, 2], a[:, :, 2], atol=1e-3)  # u starts at t = 1, not t = 0


def test_raw_file_is_deterministic_per_seed(tmp_path):
    def run(seed, folder):
        request = GenerateRequest(raw_dir=tmp_path / folder, n_train=1, n_test=1, size=8, stored_size=8,
                                  seed=seed, progress=False)
        (tmp_path / folder).mkdir()
        with h5py.File(write_raw(request, name="ns2d_fno_1e-5"), "r") as f:
            return f["u"][...]

    first, again, other = run(1, "a"), run(1, "b"), run(2, "c")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_stored_size_must_divide_size(tmp_path):
    request = GenerateRequest(raw_dir=tmp_path, n_train=1, n_test=1, size=16, stored_size=6, progress=False)
    with pytest.raises(ConfigError, match="--stored-size 6"):
        write_raw(request, name="ns2d_fno_1e-5")


def test_specs_cover_the_three_viscosities():
    assert {spec.name for spec in GENERATORS} == {"ns2d_fno_1e-5", "ns2d_fno_1e-4", "ns2d_fno_1e-3"}
    assert all(spec.source == "fno" and spec.quick["size"] == 64 for spec in GENERATORS)


def test_an_unstable_run_stops_with_an_error_instead_of_writing_nan():
    w0 = 50 * torch.from_numpy(grf_initial_vorticity(np.random.default_rng(0), 16))[None]
    solver = VorticitySolver(16, 0.0, None, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="non-finite"):
        solver.simulate(w0, n_frames=20, courant=20.0)

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
    solver = VorticitySolver(size, nu, upstream_forcing(size), dtype=torch.float64)
    w = solver.simulate(torch.zeros(1, size, size, dtype=torch.float64), n_frames=30, interval=dt)[0]
    times = dt * torch.arange(1, 31, dtype=torch.float64)
    rate = 8 * math.pi**2 * nu
    # the forcing written out from the PDE (raw-formats.md §3.3), not taken from the code under test
    x = torch.arange(size, dtype=torch.float64) / size
    phase = 2 * math.pi * (x[:, None] + x[None, :])
    forcing = 0.1 * (torch.sin(phase) + torch.cos(phase))
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


def test_frames_are_one_time_unit_apart_starting_at_t_equals_one():
    # upstream stores w at t = 1, 2, ..., T (raw-formats.md §3.1): a single unforced mode decays
    # by exp(−4π²ν|k|² t) at exactly those times under the default recording interval
    size, nu, eps = 16, 1e-3, 1e-6
    x = torch.arange(size, dtype=torch.float64) / size
    mode = torch.cos(2 * math.pi * x)[:, None].expand(size, size)
    w = VorticitySolver(size, nu, None, dtype=torch.float64).simulate(eps * mode[None], n_frames=3)[0]
    amplitude = (w * mode[..., None]).sum(dim=(0, 1)) / (mode**2).sum() / eps
    np.testing.assert_allclose(amplitude.numpy(), np.exp(-4 * math.pi**2 * nu * np.arange(1, 4)), rtol=1e-5)


def _analytic_advection(modes: list[tuple[int, int]], size: int) -> np.ndarray:
    """``u·∇w`` of ``w = Σ cos(2π k·x)`` on the grid, from the closed-form velocity of each mode:
    ``ψ_k = w_k / (4π²|k|²)``, ``u = ∂y ψ``, ``v = −∂x ψ``. Returns ``[X, Y]``."""
    x = np.arange(size) / size
    u = v = w_x = w_y = 0.0
    for k1, k2 in modes:
        sine = np.sin(2 * np.pi * (k1 * x[:, None] + k2 * x[None, :]))
        u = u - k2 * sine / (2 * np.pi * (k1**2 + k2**2))
        v = v + k1 * sine / (2 * np.pi * (k1**2 + k2**2))
        w_x = w_x - 2 * np.pi * k1 * sine
        w_y = w_y - 2 * np.pi * k2 * sine
    return u * w_x + v * w_y


def _mode_sum(modes: list[tuple[int, int]], size: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) / size
    return sum(torch.cos(2 * math.pi * (k1 * x[:, None] + k2 * x[None, :])) for k1, k2 in modes)


def test_inviscid_flow_starts_with_the_analytic_advection_tendency():
    # w0 = cos 2πx + cos 4πy: u·∇w = −1.5 sin 2πx sin 4πy ≠ 0, so ∂t w = −u·∇w at t = 0
    # fixes the sign of the advection term (a flipped sign still conserves energy and enstrophy)
    size, dt, modes = 16, 1e-4, [(1, 0), (0, 2)]
    w0 = _mode_sum(modes, size)
    w = VorticitySolver(size, 0.0, None, dtype=torch.float64).simulate(w0[None], n_frames=1, interval=dt)
    tendency = ((w[0, ..., 0] - w0) / dt).numpy()
    exact = -_analytic_advection(modes, size)
    assert np.abs(exact).max() == pytest.approx(1.5, rel=1e-2)
    np.testing.assert_allclose(tendency, exact, atol=1e-2)


def test_advection_term_is_dealiased_by_the_two_thirds_rule():
    # modes (4, 0) and (2, 1) on 16 points: their product has modes (2, −1) (kept, |k_i| <= 16/3)
    # and (6, ±1) (beyond the 2/3 cut-off, removed although 16 points resolve it)
    size, modes = 16, [(4, 0), (2, 1)]
    solver = VorticitySolver(size, 1e-3, None, dtype=torch.float64)
    term = solver.explicit_term(solver.to_spectral(_mode_sum(modes, size)[None]))[0]
    full = -np.fft.rfft2(_analytic_advection(modes, size))
    k = np.abs(np.fft.fftfreq(size, d=1 / size))
    kept = (k[:, None] <= size / 3) & (k[: size // 2 + 1][None, :] <= size / 3)
    assert np.abs(full[~kept]).max() > 1.0  # the product does reach beyond the cut-off
    np.testing.assert_allclose(term.numpy(), np.where(kept, full, 0), atol=1e-9 * np.abs(full).max())


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

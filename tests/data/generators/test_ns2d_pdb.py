"""PDEBench compressible NS generator: conservation, exact Riemann and wave solutions, IC, raw layout."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from moepot.data.generators import GenerateRequest, _fv, ns2d_pdb
from moepot.data.generators.run import trajectory_rng

QUICK_NAME = "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2"


def _totals(prim: torch.Tensor) -> torch.Tensor:
    """Total mass, x/y momentum and energy per trajectory: ``[B, 4]``."""
    return _fv.primitive_to_conservative(prim).sum(dim=(2, 3))


def test_uniform_state_stays_uniform():
    prim = torch.tensor([2.0, 0.3, -0.2, 1.5], dtype=torch.float64).view(1, 4, 1, 1).expand(1, 4, 8, 8)
    params = _fv.GasParams(eta=0.1, zeta=0.1, dx=1 / 8, dy=1 / 8)
    frames = _fv.integrate(prim.clone(), [0.0, 0.05, 0.1], params)
    torch.testing.assert_close(frames[:, -1], prim, rtol=1e-12, atol=1e-12)


def test_mass_momentum_and_energy_are_conserved():
    case = ns2d_pdb.CASES["ns2d_pdb_M1_eta1e-1_zeta1e-1"]  # transonic and viscous: every term active
    prim0 = np.stack([ns2d_pdb.initial_state(case, np.random.default_rng(seed), 16) for seed in range(3)])
    params = _fv.GasParams(eta=case.eta, zeta=case.zeta, dx=1 / 16, dy=1 / 16)
    frames = _fv.integrate(torch.from_numpy(prim0), [0.0, 0.05, 0.1], params)
    start, end = _totals(frames[:, 0]), _totals(frames[:, -1])
    scale = start.abs().amax(dim=1, keepdim=True)  # momentum totals are ~0: compare to the energy
    assert ((end - start).abs() / scale).max() < 1e-12
    assert not torch.allclose(frames[:, 0], frames[:, -1])  # something did happen


def test_sod_shock_tube_matches_the_exact_riemann_solution():
    """Sod's problem (gamma 1.4, inviscid): star pressure 0.30313, velocity 0.92745,
    densities 0.42632 (left of the contact) and 0.26557 (between contact and shock)."""
    n = 400
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    high = (x >= 0.25) & (x < 0.5)  # periodic: a left and a right Riemann problem, far apart
    rho = torch.where(high, 1.0, 0.125)
    p = torch.where(high, 1.0, 0.1)
    prim = torch.stack([rho, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), p])
    prim = prim.view(1, 4, n, 1).expand(1, 4, n, 2).clone()
    params = _fv.GasParams(eta=0.0, zeta=0.0, dx=1 / n, dy=1 / n, gamma=1.4)
    t = 0.1
    final = _fv.integrate(prim, [0.0, t], params)[0, -1, :, :, 0]  # [4, X] at the first y row

    def at(position: float) -> torch.Tensor:
        return final[:, int(position * n)]

    contact, shock, tail = 0.5 + 0.92745 * t, 0.5 + 1.75216 * t, 0.5 - 0.07027 * t
    between = at(0.5 * (contact + shock))
    assert between[0].item() == pytest.approx(0.26557, rel=0.02)
    assert between[1].item() == pytest.approx(0.92745, rel=0.02)
    assert between[3].item() == pytest.approx(0.30313, rel=0.02)
    assert at(0.5 * (tail + contact))[0].item() == pytest.approx(0.42632, rel=0.03)
    assert at(shock + 0.03)[0].item() == pytest.approx(0.125, rel=1e-6)  # ahead of the shock: untouched


def _advected_wave_error(n: int) -> float:
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    rho = 1.0 + 0.2 * torch.sin(2 * math.pi * x)
    ones = torch.ones(n, dtype=torch.float64)
    prim = torch.stack([rho, ones, 0 * ones, ones]).view(1, 4, n, 1).expand(1, 4, n, 2).clone()
    params = _fv.GasParams(eta=0.0, zeta=0.0, dx=1 / n, dy=1 / n)
    final = _fv.integrate(prim, [0.0, 0.25], params)[0, -1, 0, :, 0]
    exact = 1.0 + 0.2 * torch.sin(2 * math.pi * (x - 0.25))  # translation at speed 1
    return float((final - exact).abs().mean())


def test_smooth_density_wave_converges_at_second_order():
    coarse, fine = _advected_wave_error(32), _advected_wave_error(64)
    assert coarse / fine > 3.0  # first order would give 2
    assert fine < 2e-3


def test_shear_wave_decays_at_the_viscous_rate():
    """vy = A sin(2 pi x) with uniform rho, p solves the equations with vy ~ exp(-4 pi^2 eta t)
    (the momentum diffusion coefficient is eta * rho, as upstream; zeta plays no part)."""
    n, eta, amplitude, t = 64, 0.01, 1e-3, 0.5
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ones = torch.ones(n, dtype=torch.float64)
    prim = torch.stack([ones, 0 * ones, amplitude * torch.sin(2 * math.pi * x), ones])
    prim = prim.view(1, 4, n, 1).expand(1, 4, n, 2).clone()
    params = _fv.GasParams(eta=eta, zeta=3 * eta, dx=1 / n, dy=1 / n)
    final = _fv.integrate(prim, [0.0, t], params)[0, -1, 2, :, 0]
    measured = float((final * torch.sin(2 * math.pi * x)).sum() * 2 / n)
    assert measured == pytest.approx(amplitude * math.exp(-4 * math.pi**2 * eta * t), rel=0.01)


def test_viscous_stress_has_the_shear_and_normal_coefficients():
    """On a sine mode along x the viscous momentum term is coefficient * rho * the 3-point second
    difference, whose eigenvalue is -4 sin^2(pi h) / h^2: eta for vy (shear), 4/3 eta + zeta for vx
    (normal stress), as upstream's stress (eta Δv + (zeta + eta/3) ∇(∇·v) for this field)."""
    n, eta, zeta, rho0 = 32, 0.01, 0.03, 2.0
    h = 1 / n
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    sine = torch.sin(2 * math.pi * x)[:, None].expand(n, n)
    ones = torch.ones(n, n, dtype=torch.float64)
    prim = torch.stack([rho0 * ones, 1e-3 * sine, 2e-3 * sine, ones])[None]
    rhs = _fv.viscous_rhs(_fv.primitive_to_conservative(prim), _fv.GasParams(eta=eta, zeta=zeta, dx=h, dy=h))
    eigenvalue = -4 * math.sin(math.pi * h) ** 2 / h**2
    normal, shear = 4 / 3 * eta + zeta, eta
    torch.testing.assert_close(rhs[0, 1], normal * rho0 * eigenvalue * 1e-3 * sine, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(rhs[0, 2], shear * rho0 * eigenvalue * 2e-3 * sine, rtol=1e-9, atol=1e-15)
    assert rhs[0, 0].abs().max() == 0  # no mass diffusion


def test_periodic_box_has_no_boundary_so_shifting_the_state_shifts_the_solution():
    case = ns2d_pdb.CASES["ns2d_pdb_M1_eta1e-1_zeta1e-1"]
    prim0 = torch.from_numpy(ns2d_pdb.initial_state(case, np.random.default_rng(4), 16))[None]
    params = _fv.GasParams(eta=case.eta, zeta=case.zeta, dx=1 / 16, dy=1 / 16)
    shift = (5, 11)
    frames = _fv.integrate(prim0, [0.0, 0.05], params)
    shifted = _fv.integrate(prim0.roll(shift, dims=(2, 3)), [0.0, 0.05], params)
    torch.testing.assert_close(shifted[:, -1], frames[:, -1].roll(shift, dims=(2, 3)), rtol=1e-12, atol=1e-12)


def test_stored_frames_follow_a_sound_wave_at_the_gamma_five_thirds_speed():
    """A small pressure perturbation p' = eps cos(2 pi x) in gas at rest is a standing sound wave:
    p'(t) = eps cos(2 pi x) cos(2 pi c t), c = sqrt(5/3 p0 / rho0) (PDEBench's gamma), sampled at
    the stored times t = 0.05 k. The density's entropy part does not move."""
    n, eps = 32, 1e-4
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    mode = torch.cos(2 * math.pi * x)[:, None].expand(n, n)
    ones = torch.ones(n, n, dtype=torch.float64)
    prim0 = torch.stack([ones, 0 * ones, 0 * ones, ones + eps * mode])[None]
    case = ns2d_pdb.CASES["ns2d_pdb_M1e-1_eta1e-8_zeta1e-8_rand_512"]
    frames = ns2d_pdb.simulate(prim0, case)[0]  # [21, 4, X, Y]
    amplitude = ((frames[:, 3] - 1.0) * mode).sum(dim=(1, 2)) / (mode**2).sum() / eps
    times = 0.05 * np.arange(21)
    expected = np.cos(2 * math.pi * math.sqrt(5 / 3) * times)
    np.testing.assert_allclose(amplitude.numpy(), expected, atol=0.05)  # scheme: ~0.03 phase lag by t = 1


def test_rand_initial_condition_has_the_upstream_means():
    seen_window = seen_plain = False
    for seed in range(12):
        d0, t0 = np.random.default_rng(seed).uniform(0.1, 10.0, size=2)  # the sampler's first draws
        rho, vx, vy, p = ns2d_pdb.rand_initial_state(np.random.default_rng(seed), 32, mach=0.1)
        assert rho.min() > 0 and p.min() > 0
        if abs(rho[0, 0] - d0) < 1e-6 * d0 and abs(vx[0, 0]) < 1e-6:  # corner outside a window
            seen_window = True
            continue
        seen_plain = True
        assert rho.mean() == pytest.approx(d0, rel=1e-10)
        assert p.mean() == pytest.approx(d0 * t0, rel=1e-10)
        speed = np.sqrt(vx**2 + vy**2).mean()
        assert speed == pytest.approx(0.1 * math.sqrt(ns2d_pdb.GAMMA * p.mean() / rho.mean()), rel=1e-10)
    assert seen_window and seen_plain


def test_turb_initial_velocity_is_solenoidal_with_unit_mean_speed():
    rho, vx, vy, p = ns2d_pdb.turb_initial_state(np.random.default_rng(0), 32, mach=0.1)
    k = np.fft.fftfreq(32, d=1 / 32)
    div_hat = k[:, None] * np.fft.fft2(vx) + k[None, :] * np.fft.fft2(vy)
    assert np.abs(div_hat).max() < 1e-9 * np.abs(np.fft.fft2(vx)).max()
    assert np.sqrt(vx**2 + vy**2).mean() == pytest.approx(1.0)
    assert np.allclose(rho, 1.0) and np.allclose(p, 100.0 / ns2d_pdb.GAMMA)


def test_trajectories_do_not_depend_on_their_batch_mates():
    case = ns2d_pdb.CASES[QUICK_NAME]
    states = torch.from_numpy(
        np.stack([ns2d_pdb.initial_state(case, np.random.default_rng(seed), 16) for seed in range(3)])
    )
    params = _fv.GasParams(eta=case.eta, zeta=case.zeta, dx=1 / 16, dy=1 / 16)
    together = _fv.integrate(states, [0.0, 0.05, 0.1], params)
    alone = _fv.integrate(states[1:2], [0.0, 0.05, 0.1], params)
    torch.testing.assert_close(together[1], alone[0], rtol=1e-10, atol=1e-10)


def _request(tmp_path, **overrides) -> GenerateRequest:
    fields = dict(raw_dir=tmp_path, n_train=3, n_test=1, size=16, stored_size=8, seed=7, progress=False)
    fields.update(overrides)
    return GenerateRequest(**fields)


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    spec = {s.name: s for s in ns2d_pdb.GENERATORS}[QUICK_NAME]
    return spec.write_raw(_request(tmp_path_factory.mktemp("pdb")))


def test_raw_file_follows_the_pdebench_layout(raw_file):
    assert raw_file.name == "2D_CFD_Rand_M0.1_Eta0.01_Zeta0.01_periodic_8_Train.hdf5"
    with h5py.File(raw_file, "r") as f:
        for key in ("Vx", "Vy", "density", "pressure"):
            assert f[key].shape == (4, 21, 8, 8) and f[key].dtype == np.float32
        np.testing.assert_allclose(f["x-coordinate"][:], (np.arange(8) + 0.5) / 8)
        np.testing.assert_allclose(f["t-coordinate"][:21], np.arange(21) * 0.05, atol=1e-7)
        assert f.attrs["M"] == 0.1 and f.attrs["eta"] == 0.01 and f.attrs["zeta"] == 0.01
        density, pressure = f["density"][:], f["pressure"][:]
        first_test = np.stack([f[key][3, 0] for key in ("density", "Vx", "Vy", "pressure")])
    assert density.min() > 0 and pressure.min() > 0
    # frame 0 of the first test trajectory is its initial condition, block-averaged 16 -> 8
    case = ns2d_pdb.CASES[QUICK_NAME]
    state = ns2d_pdb.initial_state(case, trajectory_rng(7, QUICK_NAME, "test", 0), 16)
    expected = state.reshape(4, 8, 2, 8, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(first_test, expected, rtol=1e-5, atol=1e-6)


def test_generation_is_deterministic(raw_file, tmp_path):
    spec = {s.name: s for s in ns2d_pdb.GENERATORS}[QUICK_NAME]
    again = spec.write_raw(_request(tmp_path))
    with h5py.File(raw_file, "r") as a, h5py.File(again, "r") as b:
        np.testing.assert_array_equal(a["pressure"][:], b["pressure"][:])


def test_raw_file_converts_to_the_catalogue_shape(raw_file, tmp_path):
    converters = pytest.importorskip("moepot.data.converters")
    paths = converters.convert(
        "pdebench-cfd", raw_file, name=QUICK_NAME, data_root=tmp_path, n_train=3, n_test=1, progress=False
    )
    assert len(paths) == 4
    with h5py.File(paths[0], "r") as f:
        assert f["data"].shape == (8, 8, 21, 4)  # [X, Y, T, Vx/Vy/density/pressure]


def test_size_must_be_a_multiple_of_the_stored_size(tmp_path):
    from moepot.errors import ConfigError

    spec = {s.name: s for s in ns2d_pdb.GENERATORS}[QUICK_NAME]
    with pytest.raises(ConfigError, match="multiple of --stored-size"):
        spec.write_raw(_request(tmp_path, size=12, stored_size=8))


def test_every_required_id_has_a_generator():
    names = {spec.name for spec in ns2d_pdb.GENERATORS}
    for name in (
        "ns2d_pdb_M1_eta1e-1_zeta1e-1",
        "ns2d_pdb_M1_eta1e-2_zeta1e-2",
        "ns2d_pdb_M1e-1_eta1e-1_zeta1e-1",
        "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2",
    ):
        assert name in names

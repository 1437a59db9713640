"""CFDBench generator: incompressibility, boundary values, channel flux and Poiseuille flow, raw layout."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from moepot.data.generators import GenerateRequest, cfdbench
from moepot.data.generators.cfdbench import FlowCase, MacSolver


def _case(problem: str, **overrides) -> FlowCase:
    defaults = {
        "cavity": FlowCase("cavity", "bc", density=1.0, viscosity=1e-5, velocity=10.0, height=1.0, width=1.0),
        "tube": FlowCase("tube", "bc", density=100.0, viscosity=0.1, velocity=1.0, height=0.1, width=1.0),
        "cylinder": FlowCase(
            "cylinder", "bc", density=10.0, viscosity=1e-3, velocity=1.0, height=0.4, width=0.8, radius=0.06
        ),
    }[problem]
    fields = {**defaults.__dict__, **overrides}
    return FlowCase(**fields)


@pytest.mark.parametrize("problem", cfdbench.PROBLEMS)
def test_velocity_is_divergence_free_after_every_step(problem):
    solver = MacSolver(_case(problem), nx=16, ny=12)
    for _ in range(6):
        solver.step()
        divergence = solver.divergence()[~solver.solid]
        scale = solver.case.velocity / min(solver.dx, solver.dy)
        assert np.abs(divergence).max() < 1e-9 * scale


@pytest.mark.parametrize("problem", cfdbench.PROBLEMS)
def test_boundary_values_are_as_specified(problem):
    solver = MacSolver(_case(problem), nx=16, ny=16)
    solver.run(3)
    assert np.all(solver.v[0] == 0) and np.all(solver.v[-1] == 0)  # no flow through bottom/top walls
    if problem == "cavity":
        assert np.all(solver.u[:, 0] == 0) and np.all(solver.u[:, -1] == 0)  # side walls
        # the lid value is imposed through the wall ghost: the wall average equals vel_top
        ghost = solver._extended(solver.u, solver.u_edges)
        np.testing.assert_allclose(0.5 * (ghost[-1, 1:-1] + solver.u[-1]), 10.0)
        np.testing.assert_allclose(0.5 * (ghost[0, 1:-1] + solver.u[0]), 0.0, atol=1e-12)
    else:
        np.testing.assert_array_equal(solver.u[:, 0], solver.case.velocity)  # inlet
    if problem == "cylinder":
        assert solver.solid.sum() > 0
        u, v = solver.cell_velocity()
        assert np.all(u[solver.solid] == 0) and np.all(v[solver.solid] == 0)


def test_channel_flux_is_the_same_through_every_section():
    solver = MacSolver(_case("tube"), nx=16, ny=12)
    solver.run(2)
    flux = solver.u.sum(axis=0) * solver.dy  # volume flux through each vertical face column
    np.testing.assert_allclose(flux, solver.case.velocity * solver.case.height, rtol=1e-9)


def test_viscous_channel_develops_the_poiseuille_profile():
    """Steady laminar channel flow: u(y) = 1.5 U (1 - (2y/H - 1)^2), at any section far from the inlet."""
    case = _case("tube", viscosity=1.0, density=10.0, width=0.4)  # nu = 0.1: Re = 0.1, develops in ~1 s
    solver = MacSolver(case, nx=16, ny=16)
    solver.run(20)
    y = (np.arange(16) + 0.5) / 16  # y / H at the cell centres
    exact = 1.5 * case.velocity * (1.0 - (2.0 * y - 1.0) ** 2)
    profile = solver.u[:, 12]
    np.testing.assert_allclose(profile, exact, atol=0.03 * case.velocity)


def test_lid_drives_a_clockwise_primary_vortex():
    solver = MacSolver(_case("cavity"), nx=16, ny=16)
    solver.run(20)
    u, v = solver.cell_velocity()
    assert u[12:].mean() > 0 > u[:4].mean()  # along the lid near the top, back along the bottom
    # clockwise: with the lid moving +x, fluid goes down on the right wall, up on the left
    assert v[:, 12:].mean() < 0 < v[:, :4].mean()


def test_advection_transports_linear_profiles_along_the_flow_exactly():
    """u = U + b y, v = V + a x solve u_t + u·∇u = 0 at t = 0 with u_t = −b v, v_t = −a u, and a
    semi-Lagrangian step moves each component back along the flow: u(y − v dt), v(x − u dt).
    Bilinear interpolation is exact on linear fields, so away from the walls the step is exact."""
    solver = MacSolver(_case("tube"), nx=16, ny=8)
    dt, dx, dy = solver.dt, solver.dx, solver.dy
    big_u, big_v = solver.case.velocity, 0.3 * dy / dt
    b, a = 0.2 * dx / (dt * solver.case.height), 0.2 * dy / (dt * solver.case.width)
    y_u = (np.arange(solver.ny) + 0.5) * dy  # u faces: x = j dx, y at the cell centres
    x_v = (np.arange(solver.nx) + 0.5) * dx  # v faces: x at the cell centres, y = i dy
    y_v, x_u = np.arange(solver.ny + 1) * dy, np.arange(solver.nx + 1) * dx
    solver.u[:] = big_u + b * y_u[:, None]
    solver.v[1:-1] = big_v + a * x_v[None, :]
    solver.advect()
    assert big_u * dt > dx  # the profile moves by more than a cell
    expected_v = big_v + a * (x_v[None, :] - (big_u + b * y_v[:, None]) * dt)
    expected_u = big_u + b * (y_u[:, None] - (big_v + a * x_u[None, :]) * dt)
    # clear of the no-slip walls (rows) and of the inlet, where departure points leave the domain
    np.testing.assert_allclose(solver.v[2:-2, 2:], expected_v[2:-2, 2:], rtol=1e-12)
    np.testing.assert_allclose(solver.u[1:-1, 1:-1], expected_u[1:-1, 1:-1], rtol=1e-12)


def test_cylinder_is_a_disc_of_the_case_radius_centred_at_the_origin():
    """CFDBench puts the disc centre at the physical origin, (-x_min, -y_min) from the lower-left corner."""
    case = _case("cylinder")
    solver = MacSolver(case, nx=64, ny=32)
    (x0, _), (y0, _) = case.x_range(), case.y_range()
    x = x0 + (np.arange(solver.nx) + 0.5) * solver.dx
    y = y0 + (np.arange(solver.ny) + 0.5) * solver.dy
    area = solver.solid.sum() * solver.dx * solver.dy
    assert area == pytest.approx(np.pi * case.radius**2, rel=0.1)
    rows, cols = np.nonzero(solver.solid)
    assert abs(x[cols].mean()) < 0.5 * solver.dx and abs(y[rows].mean()) < 0.5 * solver.dy


def test_cases_per_problem_meets_the_requested_segment_counts():
    for n_train, n_test in ((4, 2), (64, 16), (96, 16), (200, 30)):
        n = cfdbench.cases_per_problem(n_train, n_test)
        sizes = [cfdbench._split_sizes(n, problem) for problem in cfdbench.PROBLEMS]
        assert 2 * sum(s[0] for s in sizes) >= n_train and 2 * sum(s[1] for s in sizes) >= n_test
        if n == 3:  # the minimum: one case per subset
            continue
        smaller = [cfdbench._split_sizes(n - 1, problem) for problem in cfdbench.PROBLEMS]
        assert 2 * sum(s[0] for s in smaller) < n_train or 2 * sum(s[1] for s in smaller) < n_test


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    request = GenerateRequest(
        raw_dir=tmp_path_factory.mktemp("cfd"),
        n_train=4,
        n_test=2,
        size=16,
        stored_size=8,
        seed=3,
        progress=False,
    )
    return cfdbench.write_raw(request)


def test_raw_tree_follows_the_cfdbench_layout(raw_root):
    assert raw_root.name == "cfdbench"
    required = {
        "cavity": {"vel_top", "density", "viscosity", "height", "width"},
        "tube": {"vel_in", "density", "viscosity", "height", "width"},
        "cylinder": {"vel_in", "density", "viscosity", "radius", "x_min", "x_max", "y_min", "y_max"},
    }
    for problem in cfdbench.PROBLEMS:
        cases = sorted((raw_root / problem).glob("*/case*"))
        assert len(cases) >= 3 and {c.parent.name for c in cases} == {"prop", "bc", "geo"}
        for folder in cases:
            u, v = np.load(folder / "u.npy"), np.load(folder / "v.npy")
            assert u.shape == v.shape and u.shape[1:] == (8, 8)
            assert cfdbench.FRAMES[0] <= u.shape[0] <= cfdbench.FRAMES[1]
            assert np.isfinite(u).all() and np.isfinite(v).all()
            params = json.loads((folder / "case.json").read_text())
            assert required[problem] <= set(params)
            if problem == "cylinder":  # CFDBench convention: the disc centre is at (-x_min, -y_min)
                assert params["x_min"] < 0 < params["x_max"] and params["y_min"] < 0 < params["y_max"]


def test_generation_is_deterministic(raw_root, tmp_path):
    request = GenerateRequest(
        raw_dir=tmp_path, n_train=4, n_test=2, size=16, stored_size=8, seed=3, progress=False
    )
    again = cfdbench.write_raw(request)
    for file in sorted(raw_root.rglob("*.npy"))[:6]:
        np.testing.assert_array_equal(np.load(file), np.load(again / file.relative_to(raw_root)))


def test_raw_tree_converts_to_at_least_the_requested_segments(raw_root, tmp_path):
    converters = pytest.importorskip("moepot.data.converters")
    paths = converters.convert("cfdbench", raw_root, name="cfdbench", data_root=tmp_path, progress=False)
    with h5py.File(paths[0], "r") as train, h5py.File(paths[1], "r") as test:
        assert train["data"].shape[0] >= 4 and test["data"].shape[0] >= 2
        assert train["data"].shape[1:] == (64, 64, 20, 3)


def test_simulation_count_is_the_number_of_cases_written(tmp_path):
    """The generator benchmark's cost model: CFDBench simulates whole cases, not trajectories."""
    from moepot.data.generators import all_generators

    spec = all_generators()["cfdbench"]
    request = GenerateRequest(raw_dir=tmp_path, n_train=3, n_test=1, size=16, stored_size=16, progress=False)
    root = spec.write_raw(request)
    assert len(list(root.glob("*/*/case*"))) == spec.simulation_count(3, 1) > 4


def test_cavity_frames_are_the_documented_interval_apart():
    """The stored cavity frames are FRAME_DT = 0.01 s apart (module doc), checked against a clock
    independent of the time stepping: with the lid at rest and a tiny (Stokes) velocity, the
    kinetic energy decays as dE/dt = -2 nu lambda E, lambda the Rayleigh quotient -<u, L u> / <u, u>
    of the initial field under the discrete Laplacian (a near-eigenmode: the quotient stays put)."""
    case = _case("cavity", viscosity=1e-2, velocity=0.0)  # nu = 0.01, no lid: nothing but decay
    solver = MacSolver(case, nx=16, ny=16)
    dx, dy = solver.dx, solver.dy
    x, y = np.arange(solver.nx + 1) * dx, np.arange(solver.ny + 1) * dy
    # discrete stream function on the cell corners, zero on the walls: exactly divergence-free
    psi = 1e-6 * np.sin(np.pi * x[None, :]) ** 2 * np.sin(np.pi * y[:, None]) ** 2
    solver.u[:], solver.v[:] = np.diff(psi, axis=0) / dy, -np.diff(psi, axis=1) / dx
    assert np.abs(solver.divergence()).max() < 1e-15
    lap_u, _ = cfdbench._laplacian(solver.u.shape, solver.u_free, 0 * solver.u, (dy, dx), solver.u_edges)
    lap_v, _ = cfdbench._laplacian(solver.v.shape, solver.v_free, 0 * solver.v, (dy, dx), solver.v_edges)
    u, v = solver.u[solver.u_free], solver.v[solver.v_free]
    rayleigh = -(u @ (lap_u @ u) + v @ (lap_v @ v)) / (u @ u + v @ v)
    u0, v0 = solver.cell_velocity()
    frames_u, frames_v = solver.run(10)
    energy = (frames_u**2 + frames_v**2).sum(axis=(1, 2)) / (u0**2 + v0**2).sum()
    t = 0.01 * np.arange(1, 11)  # the documented interval, not the solver's own dt
    np.testing.assert_allclose(np.log(energy), -2.0 * solver.nu * rayleigh * t, rtol=0.02)


# backward Euler (the default tube) and forward Euler (slow flow: small floored viscosity)
@pytest.mark.parametrize(("viscosity", "density", "velocity"), [(0.1, 100.0, 1.0), (0.01, 1000.0, 0.01)])
def test_outflow_has_zero_transverse_velocity_gradient(viscosity, density, velocity):
    """Outflow rule (module doc): zero velocity gradient. On v's faces (Dirichlet 0 at the inlet,
    zero-gradient at the outlet, 0 on the walls) v = sin(pi i / ny) sin(pi x / (2 W)) is an exact
    eigenvector of the discrete Laplacian (its x-derivative vanishes at the outlet), so one viscous
    step (backward or forward Euler) only rescales it, by 1 / (1 + nu dt mu) or 1 - nu dt mu."""
    case = _case("tube", viscosity=viscosity, density=density, velocity=velocity)
    solver = MacSolver(case, nx=16, ny=8)
    k = np.pi / (2 * case.width)
    x = (np.arange(solver.nx) + 0.5) * solver.dx
    mode = 1e-3 * np.sin(np.pi * np.arange(solver.ny + 1) / solver.ny)[:, None] * np.sin(k * x)[None, :]
    solver.v[:] = mode
    solver.diffuse()
    mu = 4 / solver.dx**2 * np.sin(k * solver.dx / 2) ** 2  # x: quarter wave, zero slope at the outlet
    mu += 4 / solver.dy**2 * np.sin(np.pi / (2 * solver.ny)) ** 2  # y: half wave between the walls
    amount = solver.nu * solver.dt * mu
    factor = 1 - amount if solver.explicit_diffusion else 1 / (1 + amount)
    np.testing.assert_allclose(solver.v, factor * mode, rtol=1e-10, atol=1e-15)

"""Finite-volume solver of the 2-D compressible Navier–Stokes equations on a periodic box.

The scheme follows PDEBench's ``CFD_multi_Hydra`` in kind (raw-formats.md §4.3): ideal gas,
conservative variables ``U = (rho, rho vx, rho vy, E)`` with ``E = p/(gamma-1) + rho |v|^2 / 2``;
MUSCL reconstruction of the primitive variables ``(rho, vx, vy, p)`` with a van Leer limiter
(first order at faces where the reconstructed density or pressure is not positive); the HLLC
approximate Riemann solver; two-stage (SSP-RK2 / Heun) time integration at CFL 0.3; then an
operator-split explicit viscous step, sub-cycled for stability, whose momentum diffusion
coefficients are ``eta * rho_face`` (tangential) and ``(4/3 eta + zeta) * rho_face`` (normal) with
the matching energy flux, as upstream (which treats eta and zeta like kinematic viscosities).

Every update is in flux form on a periodic grid, so total mass, momentum and energy are
conserved to round-off. All functions are vectorised over a batch of independent trajectories,
each with its own time step, so a trajectory's result does not depend on its batch mates.

Shapes: ``U``/``W``: ``[B, 4, X, Y]`` (first spatial axis x); per-trajectory scalars ``[B]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GAMMA = 5.0 / 3.0
CFL = 0.4  # per direction; the unsplit 2-D scheme is stable up to about 0.5 (upstream: 0.3)
PRESSURE_FLOOR = 1e-4
VISCOUS_SAFETY = 0.8


@dataclass(frozen=True)
class GasParams:
    """Physical parameters shared by a batch: shear (eta) and bulk (zeta) viscosity, grid spacing."""

    eta: float
    zeta: float
    dx: float
    dy: float
    gamma: float = GAMMA


def primitive_to_conservative(prim: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """``prim: [B, 4, X, Y]`` (rho, vx, vy, p) -> ``U: [B, 4, X, Y]`` (rho, mx, my, E)."""
    rho, vx, vy, p = prim.unbind(1)
    energy = p / (gamma - 1.0) + 0.5 * rho * (vx * vx + vy * vy)
    return torch.stack([rho, rho * vx, rho * vy, energy], dim=1)


def conservative_to_primitive(cons: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """``U: [B, 4, X, Y]`` -> ``prim: [B, 4, X, Y]``; the pressure is floored at ``PRESSURE_FLOOR``."""
    rho, mx, my, energy = cons.unbind(1)
    vx, vy = mx / rho, my / rho
    p = (gamma - 1.0) * (energy - 0.5 * rho * (vx * vx + vy * vy))
    return torch.stack([rho, vx, vy, p.clamp_min(PRESSURE_FLOOR)], dim=1)


def _van_leer_slope(left_diff: torch.Tensor, right_diff: torch.Tensor) -> torch.Tensor:
    """Harmonic-mean limited slope: 0 at extrema, else ``2 a b / (a + b)``."""
    product = left_diff * right_diff
    denom = left_diff + right_diff
    safe = torch.where(product > 0, denom, torch.ones_like(denom))
    return torch.where(product > 0, 2.0 * product / safe, torch.zeros_like(product))


def _face_states(prim: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right primitive states at the faces ``i + 1/2`` (i = 0..N-1) along ``dim`` (periodic).

    Returns two ``[B, 4, X, Y]`` tensors: entry ``i`` is the state just left / right of face i+1/2.
    """
    n = prim.shape[dim]
    padded = torch.cat([prim.narrow(dim, n - 2, 2), prim, prim.narrow(dim, 0, 2)], dim=dim)
    # cells -1 .. n (n + 2 of them) need a slope
    centre = padded.narrow(dim, 1, n + 2)
    slope = _van_leer_slope(centre - padded.narrow(dim, 0, n + 2), padded.narrow(dim, 2, n + 2) - centre)
    left = (centre + 0.5 * slope).narrow(dim, 1, n)  # cell i, right edge
    right = (centre - 0.5 * slope).narrow(dim, 2, n)  # cell i+1, left edge
    left_first = centre.narrow(dim, 1, n)
    right_first = centre.narrow(dim, 2, n)
    # first order where the reconstruction is not physical (density or pressure <= 0)
    bad = (left[:, 0] <= 0) | (left[:, 3] <= 0) | (right[:, 0] <= 0) | (right[:, 3] <= 0)
    bad = bad.unsqueeze(1)
    return torch.where(bad, left_first, left), torch.where(bad, right_first, right)


def hllc_flux(left: torch.Tensor, right: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """HLLC flux between primitive states ``(rho, u_normal, u_tangential, p)``: ``[B, 4, ...]``.

    Returns the flux of ``(rho, rho u_n, rho u_t, E)`` through the face, same shape. Branch-free
    form: the side K of the contact (L if ``S* >= 0``) is selected first, then
    ``F = F_K + min(S_L, 0) (U*_K - U_K)`` (K = L) or ``F_K + max(S_R, 0) (U*_K - U_K)`` (K = R),
    which equals the classic four-case HLLC flux (the clamp gives F_L / F_R for supersonic faces).
    """
    rho_l, un_l, ut_l, p_l = left.unbind(1)
    rho_r, un_r, ut_r, p_r = right.unbind(1)
    c_l = torch.sqrt(gamma * p_l / rho_l)
    c_r = torch.sqrt(gamma * p_r / rho_r)
    s_l = torch.minimum(un_l - c_l, un_r - c_r)  # Davis wave-speed estimates
    s_r = torch.maximum(un_l + c_l, un_r + c_r)
    mass_l = rho_l * (s_l - un_l)
    mass_r = rho_r * (s_r - un_r)
    s_star = (p_r - p_l + un_l * mass_l - un_r * mass_r) / (mass_l - mass_r)
    use_left = s_star >= 0
    state = torch.where(use_left.unsqueeze(1), left, right)
    rho, un, ut, p = state.unbind(1)
    s = torch.where(use_left, s_l, s_r)
    s_clamped = torch.where(use_left, s_l.clamp_max(0), s_r.clamp_min(0))
    energy = p / (gamma - 1.0) + 0.5 * rho * (un * un + ut * ut)
    mass = rho * un
    flux = torch.stack([mass, mass * un + p, mass * ut, (energy + p) * un], dim=1)
    # U*_K - U_K, with U*_K = rho (s - un)/(s - s*) (1, s*, ut, E/rho + (s* - un)(s* + p/(rho (s - un))))
    factor = (s - un) / (s - s_star)
    jump = torch.stack(
        [
            rho * (factor - 1.0),
            rho * (factor * s_star - un),
            rho * ut * (factor - 1.0),
            factor * (energy + (s_star - un) * (rho * s_star + p / (s - un))) - energy,
        ],
        dim=1,
    )
    return flux + s_clamped.unsqueeze(1) * jump


_SWAP_XY = [0, 2, 1, 3]  # (rho, vx, vy, p) <-> (rho, vy, vx, p)


def euler_rhs(cons: torch.Tensor, params: GasParams) -> torch.Tensor:
    """``-div F(U)`` of the inviscid fluxes: ``[B, 4, X, Y]``."""
    prim = conservative_to_primitive(cons, params.gamma)
    left, right = _face_states(prim, dim=2)
    flux_x = hllc_flux(left, right, params.gamma)  # face i+1/2 along x
    left, right = _face_states(prim[:, _SWAP_XY], dim=3)
    flux_y = hllc_flux(left, right, params.gamma)[:, _SWAP_XY]
    return -(flux_x - flux_x.roll(1, dims=2)) / params.dx - (flux_y - flux_y.roll(1, dims=3)) / params.dy


def viscous_rhs(cons: torch.Tensor, params: GasParams) -> torch.Tensor:
    """``-div`` of the viscous momentum and energy fluxes (upstream's simplified stress): ``[B, 4, X, Y]``."""
    prim = conservative_to_primitive(cons, params.gamma)
    rho, vx, vy = prim[:, 0], prim[:, 1], prim[:, 2]
    normal = 4.0 / 3.0 * params.eta + params.zeta
    rhs = torch.zeros_like(cons)
    # axis of the [B, X, Y] fields, spacing, (normal, tangential) velocity and their channels
    for axis, h, (v_n, v_t), (i_n, i_t) in (
        (1, params.dx, (vx, vy), (1, 2)),
        (2, params.dy, (vy, vx), (2, 1)),
    ):
        rho_face = 0.5 * (rho + rho.roll(-1, dims=axis))
        flux_n = -normal * rho_face * (v_n.roll(-1, dims=axis) - v_n) / h
        flux_t = -params.eta * rho_face * (v_t.roll(-1, dims=axis) - v_t) / h
        flux_e = (
            0.5 * (v_n + v_n.roll(-1, dims=axis)) * flux_n + 0.5 * (v_t + v_t.roll(-1, dims=axis)) * flux_t
        )
        for index, flux in ((i_n, flux_n), (i_t, flux_t), (3, flux_e)):
            rhs[:, index] -= (flux - flux.roll(1, dims=axis)) / h
    return rhs


def cfl_time_step(cons: torch.Tensor, params: GasParams, cfl: float = CFL) -> torch.Tensor:
    """Per-trajectory stable hydro step ``cfl * min(dx, dy) / max(|v| + c_s)``: ``[B]``."""
    prim = conservative_to_primitive(cons, params.gamma)
    sound = torch.sqrt(params.gamma * prim[:, 3] / prim[:, 0])
    speed = torch.maximum(prim[:, 1].abs(), prim[:, 2].abs()) + sound
    return cfl * min(params.dx, params.dy) / speed.amax(dim=(1, 2))


def viscous_time_step(cons: torch.Tensor, params: GasParams) -> torch.Tensor:
    """Per-trajectory stable explicit viscous step: ``[B]`` (inf when inviscid)."""
    nu = 4.0 / 3.0 * params.eta + params.zeta
    if nu == 0.0:
        return torch.full(cons.shape[:1], float("inf"), dtype=cons.dtype, device=cons.device)
    rho = cons[:, 0]
    ratio = 0.5 * (1.0 + rho.amax(dim=(1, 2)) / rho.amin(dim=(1, 2)))  # bound on rho_face / rho
    return VISCOUS_SAFETY * 0.5 / (nu * ratio * (1.0 / params.dx**2 + 1.0 / params.dy**2))


def _masked_step(cons: torch.Tensor, rhs: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """``U + dt * rhs`` with a per-trajectory ``dt: [B]`` (0 leaves a trajectory unchanged)."""
    return cons + dt.view(-1, 1, 1, 1) * rhs


def advance(cons: torch.Tensor, dt: torch.Tensor, params: GasParams) -> torch.Tensor:
    """One full step of per-trajectory length ``dt: [B]`` (>= 0): SSP-RK2 hydro, then viscosity."""
    stage = _masked_step(cons, euler_rhs(cons, params), dt)
    cons = 0.5 * (cons + _masked_step(stage, euler_rhs(stage, params), dt))
    if params.eta == 0.0 and params.zeta == 0.0:
        return cons
    n_sub = torch.ceil(dt / viscous_time_step(cons, params)).clamp_min(1)
    sub_dt = dt / n_sub
    for k in range(int(n_sub.max())):
        active = (k < n_sub).to(cons.dtype)
        cons = _masked_step(cons, viscous_rhs(cons, params), sub_dt * active)
    return cons


def integrate(prim0: torch.Tensor, save_times: list[float], params: GasParams) -> torch.Tensor:
    """Evolve ``prim0: [B, 4, X, Y]`` and return the primitive states at ``save_times``.

    Each trajectory uses its own CFL step, clipped so it lands exactly on every save time.
    ``save_times[0]`` must be 0 (frame 0 is the initial state). Returns ``[B, T, 4, X, Y]``.
    """
    cons = primitive_to_conservative(prim0, params.gamma)
    frames = [prim0.clone()]
    time = torch.zeros(prim0.shape[0], dtype=prim0.dtype, device=prim0.device)
    for target in save_times[1:]:
        while True:
            remaining = (target - time).clamp_min(0)
            if bool((remaining <= 1e-7 * max(target, 1.0)).all()):
                break
            dt = torch.minimum(cfl_time_step(cons, params), remaining)
            dt = torch.where(remaining <= 1e-7 * max(target, 1.0), torch.zeros_like(dt), dt)
            cons = advance(cons, dt, params)
            time = time + dt
            if not bool(torch.isfinite(cons).all()):
                raise FloatingPointError(
                    f"compressible NS solver produced non-finite values before t={target}"
                )
        time = torch.full_like(time, target)
        frames.append(conservative_to_primitive(cons, params.gamma))
    return torch.stack(frames, dim=1)

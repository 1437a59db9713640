"""PDEBench 2-D shallow water, radial dam break: ``swe_pdb``.

PDE (no bathymetry, g = 1; raw-formats.md §5.3)::

    ∂t h + ∂x(hu) + ∂y(hv) = 0
    ∂t(hu) + ∂x(hu² + ½gh²) + ∂y(huv) = 0
    ∂t(hv) + ∂x(huv) + ∂y(hv² + ½gh²) = 0

on [−2.5, 2.5]², t ∈ [0, 1], outflow (zero-order extrapolation) boundaries; initial depth 2
inside the circle of radius R ~ U(0.3, 0.7) about the origin, 1 outside, fluid at rest.
Upstream solves it with PyClaw (Roe solver, MC limiter); here a second-order finite-volume
scheme written in torch and vectorised over trajectories: MUSCL reconstruction of the
conserved variables with the MC limiter, HLL fluxes, Heun (SSP-RK2) time stepping at CFL 0.5,
every trajectory with its own adaptive step that lands exactly on the 101 output times.

Raw layout (PDEBench ``2D_rdb_NA_NA.h5``): one group per trajectory ``"0000"``,
``"0001"``, ...; each holds ``data`` float32 (T, X, Y, 1) (the depth h), ``grid/x``,
``grid/y`` (cell centres) and ``grid/t`` float32, and a YAML ``config`` attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from moepot.data.generators import GenerateRequest, GeneratorSpec
from moepot.data.generators.run import trajectory_batches, trajectory_rng
from moepot.errors import ConfigError, DataError
from moepot.io import atomic_path

NAME = "swe_pdb"
GRAVITY = 1.0
DOMAIN = (-2.5, 2.5)
T_FINAL = 1.0
N_FRAMES = 101
DEPTH_INSIDE, DEPTH_OUTSIDE = 2.0, 1.0
RADIUS_RANGE = (0.3, 0.7)
COURANT = 0.5  # on the sum of the x and y signal speeds
RAW_FILE = "2D_rdb_NA_NA.h5"


# ---------------------------------------------------------------------------------------
# PDEBench group layout (shared with the diffusion-reaction generator)


def cell_centres(size: int, low: float, high: float) -> np.ndarray:
    """Centres of ``size`` equal cells on [low, high]: ``[size]`` float64."""
    return low + (np.arange(size) + 0.5) * (high - low) / size


def block_average(frames: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor × factor`` blocks of the two axes after the first two.

    Finite-volume values are cell averages, so the coarse cell average keeps the total of each
    conserved quantity. ``frames: [B, T, X, Y, ...] -> [B, T, X/factor, Y/factor, ...]``.
    """
    if factor == 1:
        return frames
    b, t, x, y = frames.shape[:4]
    rest = frames.shape[4:]
    blocks = frames.reshape(b, t, x // factor, factor, y // factor, factor, *rest)
    return blocks.mean(axis=(3, 5))


def write_pdebench_groups(
    path: Path,
    batches: Iterable[tuple[int, np.ndarray, list[dict]]],
    *,
    n_total: int,
    frame_shape: tuple[int, ...],
    grid: dict[str, np.ndarray],
    compression: str | None = None,
) -> None:
    """Write the PDEBench "one group per trajectory" HDF5 file atomically.

    Args:
        path: the ``.h5`` file to write.
        batches: ``(start, data, configs)`` with ``data: [B, T, *frame_shape]`` of trajectories
            ``start .. start+B-1`` and one config dict per trajectory (the group's YAML attribute).
        n_total: the number of groups; all must be written.
        frame_shape: spatial and channel shape of one frame, e.g. ``(X, Y, 1)``.
        grid: ``{"x": [X], "y": [Y], "t": [T]}`` written as ``grid/x`` etc. (float32).
        compression: h5py compression of ``data`` (PDEBench DR uses ``"lzf"``).
    """
    written = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for start, data, configs in batches:
            for offset, (trajectory, config) in enumerate(zip(data, configs)):
                group = f.create_group(f"{start + offset:04d}")
                group.create_dataset("data", data=trajectory.astype(np.float32), compression=compression)
                for key, values in grid.items():
                    group.create_dataset(f"grid/{key}", data=np.asarray(values, dtype=np.float32))
                group.attrs["config"] = yaml.safe_dump(config, sort_keys=False)
                assert trajectory.shape[1:] == frame_shape, (trajectory.shape, frame_shape)
                written += 1
        if written != n_total:
            raise RuntimeError(f"{path}: wrote {written} trajectories, expected {n_total}")


# ---------------------------------------------------------------------------------------
# Finite-volume solver


def _mc_slope(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Monotonised-central limited slope from the one-sided differences (same shape)."""
    limited = torch.minimum(torch.minimum(2 * left.abs(), 2 * right.abs()), 0.5 * (left + right).abs())
    return torch.where(left * right > 0, torch.sign(right) * limited, torch.zeros_like(right))


def _physical_flux_x(q: torch.Tensor, gravity: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x-flux, x-velocity and wave speed of ``q: [B, 3, ...]`` (h, hu, hv)."""
    h, hu, hv = q[:, 0], q[:, 1], q[:, 2]
    u = hu / h
    flux = torch.stack([hu, hu * u + 0.5 * gravity * h * h, hv * u], dim=1)
    return flux, u, torch.sqrt(gravity * h)


def _flux_difference_x(q: torch.Tensor, dx: float, gravity: float) -> torch.Tensor:
    """``(F_{i+½} − F_{i−½}) / dx`` along axis X of ``q: [B, 3, X, Y]`` (outflow boundaries).

    MUSCL (MC limiter) reconstruction of the conserved variables and HLL fluxes.
    """
    padded = F.pad(q, (0, 0, 2, 2), mode="replicate")  # [B, 3, X+4, Y]: zero-order extrapolation
    delta = padded[:, :, 1:] - padded[:, :, :-1]  # [B, 3, X+3, Y]
    slope = _mc_slope(delta[:, :, :-1], delta[:, :, 1:])  # cells 1..X+2 of padded
    left = padded[:, :, 1:-2] + 0.5 * slope[:, :, :-1]  # faces between padded j and j+1, j=1..X+1
    right = padded[:, :, 2:-1] - 0.5 * slope[:, :, 1:]
    flux_l, u_l, c_l = _physical_flux_x(left, gravity)
    flux_r, u_r, c_r = _physical_flux_x(right, gravity)
    s_l = torch.minimum(u_l - c_l, u_r - c_r).clamp(max=0.0)[:, None]
    s_r = torch.maximum(u_l + c_l, u_r + c_r).clamp(min=0.0)[:, None]
    flux = (s_r * flux_l - s_l * flux_r + s_l * s_r * (right - left)) / (s_r - s_l)  # [B, 3, X+1, Y]
    return (flux[:, :, 1:] - flux[:, :, :-1]) / dx


def _swap_axes(q: torch.Tensor) -> torch.Tensor:
    """Exchange the roles of x and y: transpose the grid and swap hu with hv."""
    return q.transpose(-1, -2)[:, [0, 2, 1]]


def shallow_water_rhs(q: torch.Tensor, dx: float, gravity: float = GRAVITY) -> torch.Tensor:
    """``∂t q`` of the semi-discrete scheme; ``q: [B, 3, X, Y]`` (h, hu, hv), square cells dx.

    The y-direction reuses the x-direction code on the transposed state, so the scheme is
    exactly symmetric under x ↔ y.
    """
    return -_flux_difference_x(q, dx, gravity) - _swap_axes(_flux_difference_x(_swap_axes(q), dx, gravity))


def stable_dt(q: torch.Tensor, dx: float, gravity: float = GRAVITY, courant: float = COURANT) -> torch.Tensor:
    """Per trajectory CFL step ``courant / (max(|u|+c)/dx + max(|v|+c)/dx)``: ``[B]``."""
    h = q[:, 0]
    c = torch.sqrt(gravity * h)
    speed_x = (q[:, 1] / h).abs().add(c).amax(dim=(-2, -1))
    speed_y = (q[:, 2] / h).abs().add(c).amax(dim=(-2, -1))
    return courant * dx / (speed_x + speed_y)


def simulate_shallow_water(
    h0: torch.Tensor,
    times: torch.Tensor,
    *,
    length: float = DOMAIN[1] - DOMAIN[0],
    gravity: float = GRAVITY,
    courant: float = COURANT,
) -> torch.Tensor:
    """Integrate from rest with depth ``h0`` and record h at ``times`` (``times[0]`` = 0).

    Each trajectory covers every output interval in equal steps, as few as its own CFL
    condition allows (the CFL step is evaluated at the start of the interval); a trajectory
    that needs fewer steps than its batch mates takes zero steps (an exact identity) for the
    rest, so results do not depend on which trajectories share the batch.

    Args:
        h0: initial depth ``[B, X, Y]`` (square cells, side ``length / X``).
        times: output times ``[T]``, increasing, starting at 0.

    Returns: ``h: [B, T, X, Y]`` (same dtype as ``h0``).
    """
    dx = length / h0.shape[-2]
    q = torch.stack([h0, torch.zeros_like(h0), torch.zeros_like(h0)], dim=1)
    frames = [h0.clone()]
    for interval in torch.diff(times).tolist():
        # Equal steps per output interval, as few as the trajectory's CFL condition allows.
        substeps = torch.ceil(interval / stable_dt(q, dx, gravity, courant)).long().clamp_min(1)
        dt = interval / substeps.to(q.dtype)
        for k in range(int(substeps.max())):
            step = torch.where(k < substeps, dt, torch.zeros_like(dt))[:, None, None, None]  # 0: identity
            stage = q + step * shallow_water_rhs(q, dx, gravity)
            q = 0.5 * (q + stage + step * shallow_water_rhs(stage, dx, gravity))
        if not bool((q[:, 0] > 0).all() and torch.isfinite(q).all()):
            raise FloatingPointError("shallow-water solver: non-finite or non-positive depth (unstable run)")
        frames.append(q[:, 0].clone())
    return torch.stack(frames, dim=1)


def dam_break_depth(radius: float, size: int) -> np.ndarray:
    """Initial depth on the ``size × size`` cell centres: 2 inside ``r ≤ radius``, 1 outside. ``[X, Y]``."""
    x = cell_centres(size, *DOMAIN)
    r = np.sqrt(x[:, None] ** 2 + x[None, :] ** 2)
    return np.where(r <= radius, DEPTH_INSIDE, DEPTH_OUTSIDE)


def sample_radius(rng: np.random.Generator) -> float:
    """The dam radius of one trajectory, R ~ U(0.3, 0.7) as upstream."""
    return float(rng.uniform(*RADIUS_RANGE))


def write_raw(request: GenerateRequest, *, dtype: torch.dtype = torch.float32) -> Path:
    """Simulate ``n_train + n_test`` dam breaks and write ``2D_rdb_NA_NA.h5`` (train first)."""
    size, stored = request.size, request.stored_size
    if size % stored:
        raise ConfigError(
            f"{NAME}: --size {size} must be a multiple of --stored-size {stored} (cells are block-averaged)"
        )
    n_total = request.n_train + request.n_test
    times = torch.linspace(0.0, T_FINAL, N_FRAMES, dtype=torch.float64)
    batch_size = max(1, min(32, (1 << 27) // (N_FRAMES * size * size * 8)))
    bar = tqdm(total=n_total, desc=f"generate {NAME}", unit="traj", disable=not request.progress)

    def batches() -> Iterator[tuple[int, np.ndarray, list[dict]]]:
        start = 0
        for batch in trajectory_batches(request.n_train, request.n_test, batch_size):
            radii = [sample_radius(trajectory_rng(request.seed, NAME, split, i)) for split, i in batch]
            h0 = torch.from_numpy(np.stack([dam_break_depth(r, size) for r in radii])).to(dtype)
            try:
                h = simulate_shallow_water(h0, times.to(dtype)).double().numpy()  # [B, T, X, Y]
            except FloatingPointError as exc:
                raise DataError(f"{NAME}: trajectories {batch[0]}..{batch[-1]}: {exc}") from exc
            data = block_average(h, size // stored)[..., None]  # [B, T, X, Y, 1]
            configs = [
                {
                    "generator": "moepot",
                    "name": NAME,
                    "split": split,
                    "index": i,
                    "seed": request.seed,
                    "radius": r,
                    "gravity": GRAVITY,
                    "size": size,
                }
                for (split, i), r in zip(batch, radii)
            ]
            yield start, data, configs
            start += len(batch)
            bar.update(len(batch))

    path = Path(request.raw_dir) / RAW_FILE
    grid = {"x": cell_centres(stored, *DOMAIN), "y": cell_centres(stored, *DOMAIN), "t": times.numpy()}
    write_pdebench_groups(path, batches(), n_total=n_total, frame_shape=(stored, stored, 1), grid=grid)
    bar.close()
    return path


GENERATORS: list[GeneratorSpec] = [
    GeneratorSpec(
        name=NAME,
        source="pdebench-swe",
        write_raw=write_raw,
        size=64,
        stored_size=64,
        n_train=256,
        n_test=32,
        quick={"size": 64, "stored_size": 64, "n_train": 96, "n_test": 16},
        description="shallow-water radial dam break on [-2.5,2.5]^2: MUSCL-MC + HLL finite volume, SSP-RK2",
    )
]

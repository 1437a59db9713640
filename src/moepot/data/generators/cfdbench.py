"""CFDBench incompressible flows: lid-driven cavity, channel (tube) and flow around a cylinder.

PDE (constant density rho and dynamic viscosity mu, raw-formats.md §7.3)::

    ∇·u = 0,   rho (∂t u + (u·∇) u) = −∇p + mu Δu,

started from rest. Problems (x to the right, y up; rows of the stored arrays are y, row 0 at
the bottom; columns are x, column 0 at the inlet side):

* cavity: closed box, the top wall (lid) slides with ``vel_top`` in +x, other walls no-slip.
* tube: uniform inflow ``vel_in`` through the left edge, outflow (p = 0, zero velocity
  gradient) through the right edge, no-slip top and bottom walls.
* cylinder: as tube, with a solid disc of ``radius`` centred at the physical origin; the
  domain is ``[x_min, x_max] x [y_min, y_max]`` (CFDBench's convention: centre = (-x_min, -y_min)
  from the lower-left corner).

Parameters per subset follow upstream's Fluent scripts (bc: inlet/lid velocity, prop: density
x viscosity, geo: geometry), drawn at random from the upstream ranges instead of the full grids
so that any number of cases can be made. Numerics (the small-generator guidance): a MAC
(staggered) grid, semi-Lagrangian advection (bilinear, unconditionally stable), backward-Euler
diffusion and a pressure projection, each with a sparse LU factorisation per case; solid cells
(cylinder) have closed faces. After the projection the discrete divergence of every fluid cell
is zero to solver round-off.

Raw layout (CFDBench interpolated release): ``<root>/<problem>/<subset>/caseNNNN/`` with
``u.npy``, ``v.npy`` ``[T_case, H, W]`` (cell-centred velocity, float32) and ``case.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.ndimage import map_coordinates
from tqdm.auto import tqdm

from moepot.data.generators import GenerateRequest, GeneratorSpec
from moepot.errors import ConfigError
from moepot.io import atomic_path

NAME = "cfdbench"
PROBLEMS = ("cavity", "tube", "cylinder")
SUBSETS = ("prop", "bc", "geo")
FRAMES = (25, 35)  # T_case drawn uniformly from this range (2 segments of 20 after padding)
MAX_CELLS_PER_STEP = 3.0  # semi-Lagrangian Courant number aimed at
MAX_SUBSTEPS = 8
# A 64-cell grid cannot resolve upstream's Reynolds numbers (up to ~1e6 in the cavity): the
# kinematic viscosity is floored so that the cell Reynolds number |U| h / nu stays <= this.
MAX_CELL_REYNOLDS = 10.0
EXPLICIT_DIFFUSION_LIMIT = 0.4  # nu dt (1/dx^2 + 1/dy^2) below which diffusion is explicit
TRAIN_FRACTION, DEV_FRACTION = 0.8, 0.1  # the converter's case split
SEGMENT_FRAMES = 20
MIN_SIZE = 8  # smallest simulation grid side

# Seconds between stored frames. Upstream stores every 0.1 s; the cavity is sampled 10x more
# often here so a 64-cell grid resolves the lid-driven motion between frames (see module doc).
FRAME_DT = {"cavity": 0.01, "tube": 0.1, "cylinder": 0.1}


@dataclass(frozen=True)
class FlowCase:
    """Parameters of one case (the ``case.json`` content, plus the frame count)."""

    problem: str
    subset: str
    density: float
    viscosity: float
    velocity: float  # vel_top (cavity) or vel_in (tube, cylinder)
    height: float
    width: float
    radius: float = 0.0  # cylinder only
    n_frames: int = 40

    def x_range(self) -> tuple[float, float]:
        """Physical x extent: the cylinder's domain puts the disc centre at the origin."""
        if self.problem == "cylinder":
            return -0.25 * self.width, 0.75 * self.width
        return 0.0, self.width

    def y_range(self) -> tuple[float, float]:
        if self.problem == "cylinder":
            return -0.5 * self.height, 0.5 * self.height
        return 0.0, self.height

    def case_json(self) -> dict[str, float | int]:
        """The keys upstream's case.json has for this problem (what the converter reads)."""
        common = {"density": self.density, "viscosity": self.viscosity}
        if self.problem == "cavity":
            return {"vel_top": self.velocity, **common, "height": self.height, "width": self.width}
        if self.problem == "tube":
            return {"vel_in": self.velocity, **common, "height": self.height, "width": self.width}
        (x_min, x_max), (y_min, y_max) = self.x_range(), self.y_range()
        return {
            "vel_in": self.velocity,
            **common,
            "radius": self.radius,
            "x_min": x_min,
            "x_max": x_max,
            "y_min": y_min,
            "y_max": y_max,
        }


def sample_case(problem: str, subset: str, rng: np.random.Generator) -> FlowCase:
    """Draw one case of ``problem``/``subset`` from upstream's parameter ranges.

    cavity (default rho 1, mu 1e-5, vel_top 10, 1 m x 1 m): bc vel_top in [1, 50]; prop rho in
    {0.1, 0.5, 1..10} x mu in {1e-5, 5e-5, ..., 1e-2}; geo height, width in [0.5, 1.5] m.
    tube (default rho 100, mu 0.1, vel_in 1, 1 m long, 0.1 m wide): bc vel_in in [0.1, 5];
    prop rho in [10, 1000] x mu in [0.01, 1]; geo height in [0.05, 0.15], width in [0.5, 1.5].
    cylinder (default rho 10, mu 1e-3, vel_in 1, radius 0.04 m in a 0.8 m x 0.4 m channel):
    bc vel_in in [0.1, 1.5]; prop rho in [1, 100] x mu in [1e-3, 1e-2]; geo radius in
    [0.02, 0.06], height in [0.3, 0.5]. Upstream's geo ranges and cylinder ranges are not
    published (raw-formats.md §7.3, §12); these are this generator's choices.
    """
    n_frames = int(rng.integers(FRAMES[0], FRAMES[1] + 1))
    if problem == "cavity":
        density, viscosity, velocity, height, width = 1.0, 1e-5, 10.0, 1.0, 1.0
        if subset == "bc":
            velocity = float(rng.uniform(1.0, 50.0))
        elif subset == "prop":
            density = float(rng.choice([0.1, 0.5, *range(1, 11)]))
            viscosity = float(rng.choice([1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]))
        else:
            height, width = (float(v) for v in rng.uniform(0.5, 1.5, size=2))
        return FlowCase(problem, subset, density, viscosity, velocity, height, width, n_frames=n_frames)
    if problem == "tube":
        density, viscosity, velocity, height, width = 100.0, 0.1, 1.0, 0.1, 1.0
        if subset == "bc":
            velocity = float(rng.uniform(0.1, 5.0))
        elif subset == "prop":
            density = float(rng.uniform(10.0, 1000.0))
            viscosity = float(rng.uniform(0.01, 1.0))
        else:
            height, width = float(rng.uniform(0.05, 0.15)), float(rng.uniform(0.5, 1.5))
        return FlowCase(problem, subset, density, viscosity, velocity, height, width, n_frames=n_frames)
    if problem == "cylinder":
        density, viscosity, velocity, height, width, radius = 10.0, 1e-3, 1.0, 0.4, 0.8, 0.04
        if subset == "bc":
            velocity = float(rng.uniform(0.1, 1.5))
        elif subset == "prop":
            density = float(rng.uniform(1.0, 100.0))
            viscosity = float(rng.uniform(1e-3, 1e-2))
        else:
            radius, height = float(rng.uniform(0.02, 0.06)), float(rng.uniform(0.3, 0.5))
        return FlowCase(problem, subset, density, viscosity, velocity, height, width, radius, n_frames)
    raise ConfigError(f"cfdbench: unknown problem {problem!r}; expected one of {PROBLEMS}")


def _laplacian(
    shape: tuple[int, int],
    unknown: np.ndarray,
    fixed: np.ndarray,
    spacing: tuple[float, float],
    outside: dict[str, tuple[str, float]],
) -> tuple[sp.csc_matrix, np.ndarray]:
    """5-point Laplacian on the ``unknown`` points of a (staggered) grid, as ``A @ x + c``.

    Args:
        shape: grid ``(rows, cols)``; rows are y, columns x.
        unknown: ``[rows, cols]`` bool, the points solved for (numbered in C order).
        fixed: ``[rows, cols]`` values of the other points (their neighbours see them).
        spacing: ``(dy, dx)``.
        outside: for the neighbours beyond each edge ``"bottom"``, ``"top"``, ``"left"``,
            ``"right"``: ``("dirichlet", g)`` (a wall at half a spacing: ghost = 2 g - x) or
            ``("neumann", 0)`` (ghost = x).
    Returns:
        ``A: [n, n]`` sparse, ``c: [n]``, with ``n = unknown.sum()``.
    """
    rows, cols = shape
    number = -np.ones(shape, dtype=np.int64)
    number[unknown] = np.arange(int(unknown.sum()))
    ii, jj = np.nonzero(unknown)
    me = number[ii, jj]
    diag = np.zeros(len(me))
    const = np.zeros(len(me))
    entries_i, entries_j, entries_v = [], [], []
    for di, dj, h, edge in (
        (-1, 0, spacing[0], "bottom"),
        (1, 0, spacing[0], "top"),
        (0, -1, spacing[1], "left"),
        (0, 1, spacing[1], "right"),
    ):
        ni, nj = ii + di, jj + dj
        inside = (ni >= 0) & (ni < rows) & (nj >= 0) & (nj < cols)
        kind, value = outside[edge]
        weight = 1.0 / h**2
        # neighbours beyond the edge
        if kind == "dirichlet":
            diag[~inside] -= 2.0 * weight
            const[~inside] += 2.0 * value * weight
        # neighbours on the grid
        ni_in, nj_in = ni[inside], nj[inside]
        neighbour = number[ni_in, nj_in]
        diag[inside] -= weight
        solved = neighbour >= 0
        entries_i.append(me[inside][solved])
        entries_j.append(neighbour[solved])
        entries_v.append(np.full(int(solved.sum()), weight))
        const[np.flatnonzero(inside)[~solved]] += weight * fixed[ni_in[~solved], nj_in[~solved]]
    n = len(me)
    rows_idx = np.concatenate([me, *entries_i])
    cols_idx = np.concatenate([me, *entries_j])
    values = np.concatenate([diag, *entries_v])
    return sp.csc_matrix((values, (rows_idx, cols_idx)), shape=(n, n)), const


class MacSolver:
    """Incompressible NS on a MAC grid of ``ny x nx`` cells for one :class:`FlowCase`.

    State: ``u: [ny, nx + 1]`` (x-velocity on vertical faces, column j at x = x0 + j dx) and
    ``v: [ny + 1, nx]`` (y-velocity on horizontal faces, row i at y = y0 + i dy).
    """

    def __init__(self, case: FlowCase, nx: int, ny: int):
        self.case = case
        self.nx, self.ny = nx, ny
        (x0, x1), (y0, y1) = case.x_range(), case.y_range()
        self.dx, self.dy = (x1 - x0) / nx, (y1 - y0) / ny
        self.nu = max(
            case.viscosity / case.density, case.velocity * max(self.dx, self.dy) / MAX_CELL_REYNOLDS
        )
        xc = x0 + (np.arange(nx) + 0.5) * self.dx
        yc = y0 + (np.arange(ny) + 0.5) * self.dy
        self.solid = np.zeros((ny, nx), dtype=bool)
        if case.problem == "cylinder":
            self.solid = xc[None, :] ** 2 + yc[:, None] ** 2 <= case.radius**2
        self.channel = case.problem in ("tube", "cylinder")
        self.u = np.zeros((ny, nx + 1))
        self.v = np.zeros((ny + 1, nx))
        self.phi = np.zeros((ny, nx))  # dt p / rho, accumulated over the projections
        self._build_masks()
        self._apply_fixed()
        frame_dt = FRAME_DT[case.problem]
        speed = case.velocity * (1.5 if self.channel else 1.0)
        cells = speed * frame_dt / min(self.dx, self.dy if not self.channel else self.dx)
        self.substeps = int(min(MAX_SUBSTEPS, max(1, math.ceil(cells / MAX_CELLS_PER_STEP))))
        self.dt = frame_dt / self.substeps
        self.explicit_diffusion = (
            self.nu * self.dt * (1 / self.dx**2 + 1 / self.dy**2) <= EXPLICIT_DIFFUSION_LIMIT
        )
        self._build_solvers()
        # face positions in index space, for the semi-Lagrangian back-tracing
        self.u_index = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx + 1, dtype=float), indexing="ij")
        self.v_index = np.meshgrid(np.arange(ny + 1, dtype=float), np.arange(nx, dtype=float), indexing="ij")

    # ----------------------------------------------------------------- geometry
    def _build_masks(self) -> None:
        """Which faces are solved for (``*_free``) and which hold fixed values (walls, inlet, solid)."""
        fluid = ~self.solid
        u_free = np.zeros((self.ny, self.nx + 1), dtype=bool)
        u_free[:, 1:-1] = fluid[:, :-1] & fluid[:, 1:]
        if self.channel:
            u_free[:, -1] = fluid[:, -1]  # outflow faces
        v_free = np.zeros((self.ny + 1, self.nx), dtype=bool)
        v_free[1:-1, :] = fluid[:-1, :] & fluid[1:, :]
        self.u_free, self.v_free = u_free, v_free
        self.u_fixed = np.zeros_like(self.u)
        if self.channel:
            self.u_fixed[:, 0] = self.case.velocity  # inlet
        self.v_fixed = np.zeros_like(self.v)
        lid = self.case.velocity if self.case.problem == "cavity" else 0.0
        self.u_edges = {
            "bottom": ("dirichlet", 0.0),
            "top": ("dirichlet", lid),
            "left": ("neumann", 0.0),
            "right": ("neumann", 0.0),
        }
        self.v_edges = {
            "bottom": ("neumann", 0.0),
            "top": ("neumann", 0.0),
            "left": ("dirichlet", 0.0),
            "right": ("neumann", 0.0) if self.channel else ("dirichlet", 0.0),
        }

    def _apply_fixed(self) -> None:
        self.u[~self.u_free] = self.u_fixed[~self.u_free]
        self.v[~self.v_free] = self.v_fixed[~self.v_free]

    def _build_solvers(self) -> None:
        spacing = (self.dy, self.dx)
        lap_u, self.u_const = _laplacian(self.u.shape, self.u_free, self.u_fixed, spacing, self.u_edges)
        lap_v, self.v_const = _laplacian(self.v.shape, self.v_free, self.v_fixed, spacing, self.v_edges)
        scale = self.nu * self.dt
        if self.explicit_diffusion:
            self.u_lap, self.v_lap = lap_u.tocsr(), lap_v.tocsr()
        else:
            self.u_helmholtz = spla.splu(sp.identity(lap_u.shape[0], format="csc") - scale * lap_u)
            self.v_helmholtz = spla.splu(sp.identity(lap_v.shape[0], format="csc") - scale * lap_v)
        # pressure (phi = dt p / rho) on fluid cells: Neumann at walls, inlet and solid faces,
        # phi = 0 just beyond the outlet (channels)
        fluid = ~self.solid
        edges = {"bottom": ("neumann", 0.0), "top": ("neumann", 0.0), "left": ("neumann", 0.0)}
        edges["right"] = ("dirichlet", 0.0) if self.channel else ("neumann", 0.0)
        lap_p, _ = self._pressure_laplacian(fluid, edges)
        if not self.channel:  # pure Neumann: pin the first cell (consistent right-hand side)
            lap_p = lap_p.tolil()
            lap_p[0, 0] -= 1.0 / self.dx**2
            lap_p = lap_p.tocsc()
        self.pressure = spla.splu(lap_p.tocsc())

    def _pressure_laplacian(self, fluid: np.ndarray, edges: dict) -> tuple[sp.csc_matrix, np.ndarray]:
        """Laplacian over fluid cells; a neighbour that is solid closes that face (Neumann)."""
        lap, const = _laplacian(
            self.solid.shape, fluid, np.zeros(self.solid.shape), (self.dy, self.dx), edges
        )
        # _laplacian treats a fixed (solid) neighbour as a Dirichlet value 0 at one spacing; a
        # closed face has no flux instead: undo that neighbour's diagonal contribution.
        correction = np.zeros(self.solid.shape)
        for shift_axis, shift, h in ((0, 1, self.dy), (0, -1, self.dy), (1, 1, self.dx), (1, -1, self.dx)):
            neighbour_solid = np.roll(self.solid, shift, axis=shift_axis)
            edge = [slice(None), slice(None)]
            edge[shift_axis] = 0 if shift == 1 else -1
            neighbour_solid[tuple(edge)] = False  # rolled in from the other side: not a neighbour
            correction += neighbour_solid / h**2
        lap = lap + sp.diags(correction[fluid])
        return lap.tocsc(), const

    # ----------------------------------------------------------------- one step
    def _extended(self, field: np.ndarray, edges: dict) -> np.ndarray:
        """``field`` with one ghost layer on each side following the edge rules: ``[r + 2, c + 2]``."""
        ext = np.pad(field, 1, mode="edge")
        for edge, (kind, value) in edges.items():
            if kind != "dirichlet":
                continue
            if edge == "bottom":
                ext[0, 1:-1] = 2 * value - field[0]
            elif edge == "top":
                ext[-1, 1:-1] = 2 * value - field[-1]
            elif edge == "left":
                ext[1:-1, 0] = 2 * value - field[:, 0]
            else:
                ext[1:-1, -1] = 2 * value - field[:, -1]
        return ext

    def _sample(self, ext: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Bilinear samples of an extended field at fractional (unextended) indices."""
        return map_coordinates(ext, [rows + 1.0, cols + 1.0], order=1, mode="nearest")

    def advect(self) -> None:
        """Semi-Lagrangian advection of both components (departure points by one Euler step back)."""
        u_ext = self._extended(self.u, self.u_edges)
        v_ext = self._extended(self.v, self.v_edges)
        dt = self.dt
        # u faces: index (i, j) at x = j dx, y = (i + 1/2) dy; in v's index space: (i + 1/2, j - 1/2)
        ui, uj = self.u_index
        v_at_u = self._sample(v_ext, ui + 0.5, uj - 0.5)
        new_u = self._sample(u_ext, ui - dt * v_at_u / self.dy, uj - dt * self.u / self.dx)
        # v faces: index (i, j) at x = (j + 1/2) dx, y = i dy; in u's index space: (i - 1/2, j + 1/2)
        vi, vj = self.v_index
        u_at_v = self._sample(u_ext, vi - 0.5, vj + 0.5)
        new_v = self._sample(v_ext, vi - dt * self.v / self.dy, vj - dt * u_at_v / self.dx)
        self.u, self.v = new_u, new_v
        self._apply_fixed()

    def diffuse(self) -> None:
        """Viscous step: forward Euler when stable, else backward Euler ``(I - nu dt L) u_new = u + nu dt c``."""
        scale = self.nu * self.dt
        if self.explicit_diffusion:
            u, v = self.u[self.u_free], self.v[self.v_free]
            self.u[self.u_free] = u + scale * (self.u_lap @ u + self.u_const)
            self.v[self.v_free] = v + scale * (self.v_lap @ v + self.v_const)
            return
        self.u[self.u_free] = self.u_helmholtz.solve(self.u[self.u_free] + scale * self.u_const)
        self.v[self.v_free] = self.v_helmholtz.solve(self.v[self.v_free] + scale * self.v_const)

    def divergence(self) -> np.ndarray:
        """Discrete divergence per cell: ``[ny, nx]`` (meaningful on fluid cells)."""
        return (self.u[:, 1:] - self.u[:, :-1]) / self.dx + (self.v[1:, :] - self.v[:-1, :]) / self.dy

    def _subtract_gradient(self, phi: np.ndarray) -> None:
        """``u -= grad phi`` on every solved face (``phi = 0`` half a cell beyond a channel outlet)."""
        interior_u = self.u_free[:, 1:-1]
        self.u[:, 1:-1][interior_u] -= ((phi[:, 1:] - phi[:, :-1]) / self.dx)[interior_u]
        if self.channel:
            outlet = self.u_free[:, -1]
            self.u[outlet, -1] += 2.0 * phi[outlet, -1] / self.dx
        interior_v = self.v_free[1:-1, :]
        self.v[1:-1, :][interior_v] -= ((phi[1:, :] - phi[:-1, :]) / self.dy)[interior_v]

    def project(self) -> None:
        """Remove the divergence: solve ``L dphi = div u`` on fluid cells, ``u -= grad dphi``."""
        fluid = ~self.solid
        correction = np.zeros((self.ny, self.nx))
        correction[fluid] = self.pressure.solve(self.divergence()[fluid])
        self._subtract_gradient(correction)
        self.phi += correction

    def step(self) -> None:
        """Incremental pressure correction: advect, subtract the last pressure gradient, diffuse, project."""
        self.advect()
        self._subtract_gradient(self.phi)
        self.diffuse()
        self.project()

    def cell_velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centred velocity (face averages): two ``[ny, nx]`` arrays; 0 inside solids."""
        return 0.5 * (self.u[:, 1:] + self.u[:, :-1]), 0.5 * (self.v[1:, :] + self.v[:-1, :])

    def run(self, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames after each frame interval (the state at rest is not stored): ``u, v: [T, ny, nx]``."""
        frames_u, frames_v = [], []
        for _ in range(n_frames):
            for _ in range(self.substeps):
                self.step()
            u, v = self.cell_velocity()
            frames_u.append(u)
            frames_v.append(v)
        return np.stack(frames_u), np.stack(frames_v)


def _split_sizes(n_cases: int, problem: str) -> tuple[int, int]:
    """(train, test) case counts of the converter's split of ``n_cases`` cases (dev dropped)."""
    rounding = round if problem == "cavity" else int
    n_train, n_dev = rounding(TRAIN_FRACTION * n_cases), rounding(DEV_FRACTION * n_cases)
    return n_train, n_cases - n_train - n_dev


def cases_per_problem(n_train: int, n_test: int) -> int:
    """Fewest cases per problem whose split yields >= n_train train and >= n_test test segments."""
    segments = math.ceil(FRAMES[0] / SEGMENT_FRAMES)  # every case has at least this many
    n_cases = 3
    while True:
        sizes = [_split_sizes(n_cases, problem) for problem in PROBLEMS]
        if segments * sum(s[0] for s in sizes) >= n_train and segments * sum(s[1] for s in sizes) >= n_test:
            return n_cases
        n_cases += 1


def simulation_count(n_train: int, n_test: int) -> int:
    """Cases simulated for ``n_train`` + ``n_test`` segments (module level: specs are pickled
    into the worker processes of ``moepot data generate``)."""
    return len(PROBLEMS) * cases_per_problem(n_train, n_test)


def _block_average(frames: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the last two axes."""
    if factor == 1:
        return frames
    *lead, ny, nx = frames.shape
    return frames.reshape(*lead, ny // factor, factor, nx // factor, factor).mean(axis=(-3, -1))


def simulate_case(case: FlowCase, size: int, stored_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Run one case on ``size x size`` cells; frames block-averaged to ``stored_size``: ``[T, S, S]`` x 2."""
    solver = MacSolver(case, nx=size, ny=size)
    u, v = solver.run(case.n_frames)
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        raise FloatingPointError(f"cfdbench: non-finite velocity in case {case}")
    factor = size // stored_size
    return _block_average(u, factor), _block_average(v, factor)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def write_raw(request: GenerateRequest) -> Path:
    """Simulate enough cases per problem for ``n_train`` / ``n_test`` 20-frame segments after the
    converter's 80/10/10 case split, and write the CFDBench folder tree; returns ``<raw_dir>/cfdbench``.
    """
    from moepot.data.generators.run import trajectory_rng  # the shared seeding rule

    size, stored = request.size, request.stored_size
    if size < MIN_SIZE:
        raise ConfigError(f"{NAME}: --size {size} is too small; expected at least {MIN_SIZE} cells per side")
    if size % stored:
        raise ConfigError(
            f"{NAME}: --size {size} must be a multiple of --stored-size {stored} (cells are block-averaged)"
        )
    n_cases = cases_per_problem(request.n_train, request.n_test)
    root = Path(request.raw_dir) / NAME
    jobs = []
    for problem in PROBLEMS:
        for k in range(n_cases):
            subset, index = SUBSETS[k % len(SUBSETS)], k // len(SUBSETS)
            rng = trajectory_rng(request.seed, f"{NAME}/{problem}/{subset}", "train", index)
            jobs.append((root / problem / subset / f"case{index:04d}", sample_case(problem, subset, rng)))
    for folder, case in tqdm(jobs, desc=f"generate {NAME}", unit="case", disable=not request.progress):
        u, v = simulate_case(case, size, stored)
        folder.mkdir(parents=True, exist_ok=True)
        _save_npy(folder / "u.npy", u.astype(np.float32))
        _save_npy(folder / "v.npy", v.astype(np.float32))
        with atomic_path(folder / "case.json") as tmp:
            tmp.write_text(json.dumps(case.case_json(), indent=2))
    return root


GENERATORS: list[GeneratorSpec] = [
    GeneratorSpec(
        name=NAME,
        source="cfdbench",
        write_raw=write_raw,
        size=64,
        stored_size=64,
        n_train=96,
        n_test=16,
        # 21 cases per problem: the converter's split then gives >= 96 train and 16 test segments
        quick={"size": 64, "stored_size": 64, "n_train": 96, "n_test": 16},
        simulations=simulation_count,
        description=(
            "incompressible NS: lid-driven cavity, channel, cylinder (prop/bc/geo subsets): MAC grid, "
            "semi-Lagrangian advection, implicit diffusion, pressure projection"
        ),
    )
]

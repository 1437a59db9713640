"""PDEArena smoke buoyancy Navier–Stokes: ``ns2d_pda`` and ``ns2d_cond_pda``, simulated with PhiFlow.

PDE (raw-formats.md §8.3), incompressible flow with a passive smoke density s driving it::

    ∂t s + v·∇s = 0,   ∂t v + v·∇v = nu Δv − ∇p + (0, b s),   ∇·v = 0,

nu = 0.01, buoyancy b = 0.5 (``ns2d_pda``) or b ~ U(0.2, 0.5) per file (``ns2d_cond_pda``), on the
closed box [0, 32]^2 (velocity on a staggered grid with zero boundary values, smoke cell-centred
with a zero-gradient boundary). Initial state: v = 0, s = |n| with n PhiFlow's
``Noise(scale=11, smoothness=6)`` field (drawn here with numpy from the same spectrum, so every
trajectory has its own seed). Each step of dt = 1.5 does what upstream's ``pdedatagen`` does with
PhiFlow: semi-Lagrangian advection of s, buoyancy resampled to the velocity faces, semi-Lagrangian
self-advection of v plus dt times the force, explicit diffusion, pressure projection
(``fluid.make_incompressible``). Of 8 + 56 steps the first 8 are dropped; ``ns2d_pda`` keeps
every 4th of the rest (14 frames), ``ns2d_cond_pda`` all 56.

PhiFlow (what PDEArena generated the data with) is an optional dependency: ``pip install phiflow``
(the ``[phiflow]`` extra). Raw layout: files ``NavierStokes2D_{mode}_{seed}_{buoyancy:.5f}[_{n}].h5``,
each with a group ``<mode>`` holding ``u``, ``vx``, ``vy`` float64 ``[n, T, X, Y]`` and ``t``, ``x``,
``y``, ``dt``, ``dx``, ``dy``, ``buo_y``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from moepot.data.generators import GenerateRequest, GeneratorSpec
from moepot.errors import ConfigError
from moepot.io import atomic_path

DOMAIN = 32.0
VISCOSITY = 0.01
STEP_DT = 1.5
SKIPPED_STEPS = 8
RECORDED_STEPS = 56
NOISE_SCALE = 11.0
NOISE_SMOOTHNESS = 6.0
CG_TOLERANCE = 1e-5
MIN_SIZE = 8  # smallest simulation grid side
BATCH = 32  # trajectories simulated together (PhiFlow's per-step cost is mostly Python overhead)


@dataclass(frozen=True)
class SmokeSet:
    """One PDEArena smoke dataset: folder name, frame rate, buoyancy rule."""

    folder: str
    rate: int  # keep every rate-th recorded step
    conditioned: bool  # buoyancy drawn per file in [0.2, 0.5] instead of 0.5
    per_file: int  # trajectories per file
    skipped: int = SKIPPED_STEPS  # initial steps not recorded
    recorded: int = RECORDED_STEPS  # steps recorded after them (every rate-th is kept)

    @property
    def n_frames(self) -> int:
        return self.recorded // self.rate


SETS: dict[str, SmokeSet] = {
    "ns2d_pda": SmokeSet("NavierStokes2D_smoke", rate=4, conditioned=False, per_file=32),
    "ns2d_cond_pda": SmokeSet("NavierStokes2D_cond_smoke_v1", rate=1, conditioned=True, per_file=8),
}


def _phiflow():
    """Import PhiFlow's ``phi.flow`` namespace, or explain how to install it."""
    try:
        from phi import flow
    except ImportError as exc:
        raise ConfigError(
            "the PDEArena smoke generators (ns2d_pda, ns2d_cond_pda) need PhiFlow, the library "
            "PDEArena generated them with: pip install 'moepot[phiflow]' (or pip install phiflow)"
        ) from exc
    return flow


def smoke_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """PhiFlow's ``Noise(scale=11, smoothness=6)`` on ``size x size`` cells of the [0, 32]^2 box,
    normalised to zero mean and unit standard deviation: ``[X, Y]`` float64.

    Complex white noise in Fourier space, weighted by ``|k|^(-2 smoothness)`` with the physical
    wave vector ``k = index / 32 * scale`` and a steep high-pass ``1 / (1 + exp((0.1 - |k|^2) 1000))``.
    """
    index = np.fft.fftfreq(size) * size
    kx, ky = np.meshgrid(index, index, indexing="ij")
    k2 = (kx**2 + ky**2) * (NOISE_SCALE / DOMAIN) ** 2
    k2_safe = np.where(k2 == 0, 1.0, k2)
    with np.errstate(over="ignore"):
        high_pass = 1.0 / (1.0 + np.exp((0.1 - k2) * 1000.0))
    white = rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))
    field = np.fft.ifft2(white * k2_safe ** (-NOISE_SMOOTHNESS) * high_pass).real
    return (field - field.mean()) / field.std()


def viscous_step(velocity):
    """One explicit (forward Euler) diffusion step of a PhiFlow velocity field: nu = 0.01, dt = 1.5."""
    return _phiflow().diffuse.explicit(velocity, VISCOSITY, STEP_DT)


def simulate(
    smoke0: np.ndarray, buoyancy: float, smoke_set: SmokeSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a batch of trajectories with PhiFlow.

    Args:
        smoke0: initial smoke ``[B, X, Y]`` (X = Y, cells of the [0, 32]^2 box).
        buoyancy: b of the force (0, b s).
        smoke_set: which frames to keep.
    Returns:
        ``u, vx, vy``: ``[B, T, X, Y]`` float64; ``vx[..., i, j]`` is the x-velocity on the left
        face of cell (i, j), ``vy`` on its bottom face (the staggered tensor minus its last entries).
    """
    flow = _phiflow()
    math = flow.math
    size = smoke0.shape[-1]
    with math.precision(64), warnings.catch_warnings():
        # the closed box's pressure system is singular by one constant, which PhiFlow's direct
        # solve handles; it warns about it (and about scipy's matrix format) on every step
        warnings.filterwarnings("ignore", message=".*Rank deficiency.*")
        warnings.filterwarnings("ignore", message=".*spsolve requires A be CSC or CSR.*")
        warnings.filterwarnings("ignore", message=".*symmetric-gradient extrapolation is experimental.*")
        bounds = flow.Box(x=DOMAIN, y=DOMAIN)
        values = math.tensor(smoke0, math.batch("b"), math.spatial("x", "y"))
        smoke = flow.CenteredGrid(values, flow.extrapolation.BOUNDARY, x=size, y=size, bounds=bounds)
        velocity = flow.StaggeredGrid(
            math.zeros(math.batch(b=smoke0.shape[0])), flow.extrapolation.ZERO, x=size, y=size, bounds=bounds
        )
        solve = flow.Solve("auto", CG_TOLERANCE, CG_TOLERANCE)
        frames = []
        for step in range(smoke_set.skipped + smoke_set.recorded):
            smoke = flow.advect.semi_lagrangian(smoke, velocity, STEP_DT)
            force = (smoke * (0, buoyancy)).at(velocity)
            velocity = flow.advect.semi_lagrangian(velocity, velocity, STEP_DT) + STEP_DT * force
            velocity = viscous_step(velocity)
            velocity, _ = flow.fluid.make_incompressible(velocity, (), solve)
            recorded = step - smoke_set.skipped
            if recorded >= 0 and recorded % smoke_set.rate == 0:
                staggered = velocity.staggered_tensor().numpy("b,x,y,vector")  # [B, X+1, Y+1, 2]
                frames.append(
                    (smoke.values.numpy("b,x,y"), staggered[:, :-1, :-1, 0], staggered[:, :-1, :-1, 1])
                )
    u, vx, vy = (np.stack([frame[k] for frame in frames], axis=1) for k in range(3))
    return u, vx, vy


def _file_seed(seed: int, file_index: int) -> int:
    """The seed in the name of file ``file_index``: the converter numbers trajectories in sorted
    file-name order, and seeds of one width (100000 + index for seed 0) sort as their indices do."""
    return (seed + 1) * 100_000 + file_index


def _file_name(mode: str, file_seed: int, buoyancy: float, n: int) -> str:
    suffix = f"_{n}" if mode == "train" else ""
    return f"NavierStokes2D_{mode}_{file_seed}_{buoyancy:.5f}{suffix}.h5"


def write_raw(request: GenerateRequest, *, name: str) -> Path:
    """Simulate the train and test trajectories and write PDEArena's ``.h5`` files; returns their folder."""
    from moepot.data.generators.run import trajectory_rng  # the shared seeding rule

    smoke_set = SETS[name]
    size, stored = request.size, request.stored_size
    if size < MIN_SIZE:
        raise ConfigError(f"{name}: --size {size} is too small; expected at least {MIN_SIZE} cells per side")
    if size != stored:
        raise ConfigError(
            f"{name}: --stored-size {stored} must equal --size {size} (PDEArena stores the simulation grid)"
        )
    _phiflow()
    folder = Path(request.raw_dir) / smoke_set.folder
    bar = tqdm(
        total=request.n_train + request.n_test,
        desc=f"generate {name}",
        unit="traj",
        disable=not request.progress,
    )
    for mode, count in (("train", request.n_train), ("test", request.n_test)):
        for file_index, start in enumerate(range(0, count, smoke_set.per_file)):
            members = range(start, min(start + smoke_set.per_file, count))
            buoyancy = 0.5
            if smoke_set.conditioned:
                buoyancy = float(
                    trajectory_rng(request.seed, f"{name}/buoyancy", mode, file_index).uniform(0.2, 0.5)
                )
            smoke0 = np.stack(
                [np.abs(smoke_noise(trajectory_rng(request.seed, name, mode, i), size)) for i in members]
            )
            parts = [
                simulate(smoke0[k : k + BATCH], buoyancy, smoke_set) for k in range(0, len(members), BATCH)
            ]
            u, vx, vy = (np.concatenate([part[j] for part in parts]) for j in range(3))
            _write_file(
                folder / _file_name(mode, _file_seed(request.seed, file_index), buoyancy, len(members)),
                mode,
                u,
                vx,
                vy,
                buoyancy,
                smoke_set,
            )
            bar.update(len(members))
    bar.close()
    return folder


def _write_file(path: Path, mode: str, u, vx, vy, buoyancy: float, smoke_set: SmokeSet) -> None:
    """One PDEArena file: group ``mode`` with the fields ``[n, T, X, Y]`` and the coordinates."""
    n, n_frames, size = u.shape[0], u.shape[1], u.shape[2]
    coords = np.linspace(0.0, DOMAIN, size)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        group = f.create_group(mode)
        for key, values in (("u", u), ("vx", vx), ("vy", vy)):
            group.create_dataset(key, data=values.astype(np.float64))
        group.create_dataset("t", data=np.tile(np.linspace(18.0, 102.0, n_frames), (n, 1)))
        group.create_dataset("x", data=np.tile(coords, (n, 1)))
        group.create_dataset("y", data=np.tile(coords, (n, 1)))
        group.create_dataset("dt", data=np.full(n, STEP_DT * smoke_set.rate))
        group.create_dataset("dx", data=np.full(n, coords[1] - coords[0]))
        group.create_dataset("dy", data=np.full(n, coords[1] - coords[0]))
        group.create_dataset("buo_y", data=np.full(n, buoyancy))


def _spec(name: str) -> GeneratorSpec:
    smoke_set = SETS[name]
    buoyancy = "b ~ U(0.2, 0.5) per file" if smoke_set.conditioned else "b = 0.5"
    return GeneratorSpec(
        name=name,
        source="pdearena-ns",
        write_raw=functools.partial(write_raw, name=name),
        size=32,
        stored_size=32,
        n_train=32,
        n_test=8,
        quick={"size": 32, "stored_size": 32, "n_train": 16, "n_test": 4},
        stores_simulation_grid=True,
        # PhiFlow's pressure solve indexes its (side^2)^2 sparse matrix with 32-bit integers
        max_size=215,
        description=(
            f"smoke buoyancy NS on [0, 32]^2 ({buoyancy}, T={smoke_set.n_frames}) with PhiFlow: "
            "semi-Lagrangian advection, explicit diffusion, pressure projection (needs phiflow)"
        ),
    )


GENERATORS: list[GeneratorSpec] = [_spec(name) for name in SETS]

"""PDEBench 2-D compressible Navier–Stokes: ``ns2d_pdb_M*_eta*_zeta*`` (128 sets, and the 512 ones).

PDE (ideal gas, gamma = 5/3) on the periodic unit square, t in [0, 1] (raw-formats.md §4.3)::

    ∂t rho + ∇·(rho v) = 0
    rho (∂t v + v·∇v) = −∇p + eta Δv + (zeta + eta/3) ∇(∇·v)
    ∂t (eps + rho|v|²/2) + ∇·[(eps + p + rho|v|²/2) v − v·sigma'] = 0,   eps = p / (gamma − 1)

Initial fields as upstream's ``2D_rand`` sampler (the ``Rand`` files): background density
``d0 ~ U(0.1, 10)`` and temperature ``T0 ~ U(0.1, 10)``; four random fields, each a sum of
``|k|^-1/2 sin(k·x + phi)`` over ``k = 2π(i, j)``, ``i, j in -4..4``, ``i·j != 0`` with independent
uniform phases; velocity rescaled to mean speed ``M c_s`` (``c_s = sqrt(gamma T0)``); density
and pressure ``d0 (1 + dD d/mean|d|)``, ``d0 T0 (1 + dP p/mean|p|)`` with ``dD, dP ~ U(0.01, 0.2)``;
with probability 1/2 a smooth box window confines the perturbation. ``2D_Turbs`` (the
``turb_512`` sets): uniform density 1, sound speed 1/M, solenoidal random velocity of mean
speed 1. Solver: :mod:`moepot.data.generators._fv` (MUSCL + HLLC, SSP-RK2, viscous sub-steps).

Raw layout (PDEBench HDF5): root datasets ``Vx``, ``Vy``, ``density``, ``pressure`` float32
``[N, 21, X, Y]`` (first spatial axis x); ``x-coordinate``, ``y-coordinate`` (cell centres),
``t-coordinate`` (22 values ``0, 0.05, ..., 1.05`` as upstream's generator writes); root
attributes ``eta``, ``zeta``, ``M``. Trajectories ``0..n_train-1`` are train, the rest test.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from moepot.data.generators import GenerateRequest, GeneratorSpec
from moepot.data.generators._fv import GAMMA, GasParams, integrate
from moepot.errors import ConfigError
from moepot.io import atomic_path

N_FRAMES = 21  # t = 0, 0.05, ..., 1
SAVE_DT = 0.05
MAX_MODE = 4  # modes i, j in -MAX_MODE..MAX_MODE with i*j != 0
WINDOW_WIDTH = 0.01
MIN_SIZE = 8  # smallest simulation grid side
BATCH = 16  # trajectories simulated together
FIELDS = ("Vx", "Vy", "density", "pressure")


@dataclass(frozen=True)
class CfdCase:
    """One PDEBench compressible NS dataset: Mach number, viscosities, initial-condition family."""

    mach: float
    eta: float
    zeta: float
    init: str  # "rand" or "turb"
    upstream_size: int

    def raw_name(self, size: int) -> str:
        kind = "Rand" if self.init == "rand" else "Turb"
        return f"2D_CFD_{kind}_M{self.mach:.1f}_Eta{self.eta:g}_Zeta{self.zeta:g}_periodic_{size}_Train.hdf5"


CASES: dict[str, CfdCase] = {
    "ns2d_pdb_M1_eta1e-1_zeta1e-1": CfdCase(1.0, 0.1, 0.1, "rand", 128),
    "ns2d_pdb_M1_eta1e-2_zeta1e-2": CfdCase(1.0, 0.01, 0.01, "rand", 128),
    "ns2d_pdb_M1e-1_eta1e-1_zeta1e-1": CfdCase(0.1, 0.1, 0.1, "rand", 128),
    "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2": CfdCase(0.1, 0.01, 0.01, "rand", 128),
    "ns2d_pdb_M1e-1_eta1e-8_zeta1e-8_turb_512": CfdCase(0.1, 1e-8, 1e-8, "turb", 512),
    "ns2d_pdb_M1_eta1e-8_zeta1e-8_turb_512": CfdCase(1.0, 1e-8, 1e-8, "turb", 512),
    "ns2d_pdb_M1e-1_eta1e-8_zeta1e-8_rand_512": CfdCase(0.1, 1e-8, 1e-8, "rand", 512),
    "ns2d_pdb_M1_eta1e-8_zeta1e-8_rand_512": CfdCase(1.0, 1e-8, 1e-8, "rand", 512),
}


def cell_centres(size: int) -> np.ndarray:
    """Cell centres ``(i + 1/2) / size`` of the unit interval: ``[size]`` float64."""
    return (np.arange(size) + 0.5) / size


def _mode_basis(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sin(k·x)``, ``cos(k·x)`` ``[K, X*Y]`` and ``|k|^-1/2`` ``[K]`` of the upstream random modes."""
    indices = [
        (i, j) for i in range(-MAX_MODE, MAX_MODE + 1) for j in range(-MAX_MODE, MAX_MODE + 1) if i * j != 0
    ]
    k = 2 * math.pi * np.array(indices, dtype=np.float64)  # [K, 2]
    x = cell_centres(size)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    phase = k[:, :1] * xx.reshape(1, -1) + k[:, 1:] * yy.reshape(1, -1)
    return np.sin(phase), np.cos(phase), np.linalg.norm(k, axis=1) ** -0.5


def random_mode_fields(phases: np.ndarray, size: int) -> np.ndarray:
    """``sum_k |k|^-1/2 sin(k·x + phi_k)`` for each row of ``phases: [F, K]`` -> ``[F, X, Y]``."""
    sin_kx, cos_kx, amplitude = _mode_basis(size)
    fields = (np.cos(phases) * amplitude) @ sin_kx + (np.sin(phases) * amplitude) @ cos_kx
    return fields.reshape(-1, size, size)


def _box_window(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return 0.5 * (np.tanh((x - lo) / WINDOW_WIDTH) - np.tanh((x - hi) / WINDOW_WIDTH))


def rand_initial_state(rng: np.random.Generator, size: int, mach: float) -> np.ndarray:
    """One draw of upstream's ``2D_rand`` initial condition: ``[4, X, Y]`` (rho, vx, vy, p) float64."""
    d0, t0 = rng.uniform(0.1, 10.0, size=2)
    delta_d, delta_p = rng.uniform(0.01, 0.2, size=2)
    n_modes = (2 * MAX_MODE) ** 2
    vx, vy, p_tilde, d_tilde = random_mode_fields(rng.uniform(0.0, 2 * math.pi, size=(4, n_modes)), size)
    u0 = mach * math.sqrt(GAMMA * t0)
    speed = np.sqrt(vx**2 + vy**2).mean()
    vx, vy = vx * (u0 / speed), vy * (u0 / speed)
    rho = d0 * (1.0 + delta_d * d_tilde / np.abs(d_tilde).mean())
    p = d0 * t0 * (1.0 + delta_p * p_tilde / np.abs(p_tilde).mean())
    use_window = rng.uniform() < 0.5
    x_lo, y_lo = rng.uniform(0.1, 0.45, size=2)
    x_hi, y_hi = rng.uniform(0.55, 0.9, size=2)
    if use_window:
        x = cell_centres(size)
        window = _box_window(x, x_lo, x_hi)[:, None] * _box_window(x, y_lo, y_hi)[None, :]
        rho = rho * window + d0 * (1.0 - window)
        p = p * window + d0 * t0 * (1.0 - window)
        vx, vy = vx * window, vy * window
    return np.stack([rho, vx, vy, p])


def turb_initial_state(rng: np.random.Generator, size: int, mach: float) -> np.ndarray:
    """One draw of upstream's ``2D_Turbs`` initial condition: ``[4, X, Y]`` (rho, vx, vy, p) float64."""
    n_modes = (2 * MAX_MODE) ** 2
    vx, vy = random_mode_fields(rng.uniform(0.0, 2 * math.pi, size=(2, n_modes)), size)
    # Helmholtz projection onto the divergence-free part
    k = np.fft.fftfreq(size, d=1.0 / size)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    k2 = np.where(kx**2 + ky**2 == 0, 1.0, kx**2 + ky**2)
    vx_hat, vy_hat = np.fft.fft2(vx), np.fft.fft2(vy)
    div_hat = (kx * vx_hat + ky * vy_hat) / k2
    vx = np.fft.ifft2(vx_hat - kx * div_hat).real
    vy = np.fft.ifft2(vy_hat - ky * div_hat).real
    scale = np.sqrt(vx**2 + vy**2).mean()
    sound = 1.0 / mach
    rho = np.ones((size, size))
    p = np.full((size, size), sound**2 / GAMMA)
    return np.stack([rho, vx / scale, vy / scale, p])


def initial_state(case: CfdCase, rng: np.random.Generator, size: int) -> np.ndarray:
    """The upstream initial condition of ``case``: ``[4, X, Y]`` (rho, vx, vy, p) float64."""
    sampler = rand_initial_state if case.init == "rand" else turb_initial_state
    return sampler(rng, size, case.mach)


def save_times() -> list[float]:
    """The 21 stored times ``0, 0.05, ..., 1.0``."""
    return [round(SAVE_DT * k, 10) for k in range(N_FRAMES)]


def simulate(prim0: torch.Tensor, case: CfdCase) -> torch.Tensor:
    """Evolve ``prim0: [B, 4, X, Y]`` (rho, vx, vy, p) to the 21 stored times: ``[B, 21, 4, X, Y]``."""
    size = prim0.shape[-1]
    params = GasParams(eta=case.eta, zeta=case.zeta, dx=1.0 / size, dy=1.0 / size)
    return integrate(prim0, save_times(), params)


def _block_average(frames: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the last two axes (finite-volume cell averages)."""
    if factor == 1:
        return frames
    *lead, nx, ny = frames.shape
    return frames.reshape(*lead, nx // factor, factor, ny // factor, factor).mean(axis=(-3, -1))


def _signal_speed(state: np.ndarray) -> float:
    """Largest ``|v| + c_s`` of a primitive state ``[4, X, Y]`` (sets the CFL step)."""
    rho, vx, vy, p = state
    return float((np.sqrt(vx**2 + vy**2) + np.sqrt(GAMMA * p / rho)).max())


def write_raw(request: GenerateRequest, *, name: str, dtype: torch.dtype = torch.float32) -> Path:
    """Simulate ``n_train + n_test`` trajectories and write the PDEBench ``2D_CFD_*_Train.hdf5`` file.

    Trajectories are simulated in batches on a ``size x size`` grid and stored as block averages
    on ``stored_size x stored_size`` cells (``size`` must be a multiple of ``stored_size``).
    """
    from moepot.data.generators.run import trajectory_rng  # the shared seeding rule

    case = CASES[name]
    size, stored = request.size, request.stored_size
    if size < MIN_SIZE:
        raise ConfigError(f"{name}: --size {size} is too small; expected at least {MIN_SIZE} cells per side")
    if size % stored:
        raise ConfigError(
            f"{name}: --size {size} must be a multiple of --stored-size {stored} (cells are block-averaged)"
        )
    n_total = request.n_train + request.n_test
    splits = [("train", i) for i in range(request.n_train)] + [("test", i) for i in range(request.n_test)]
    path = Path(request.raw_dir) / case.raw_name(stored)
    bar = tqdm(total=n_total, desc=f"generate {name}", unit="traj", disable=not request.progress)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        shape = (n_total, N_FRAMES, stored, stored)
        datasets = [
            f.create_dataset(key, shape, "f4", chunks=(1, N_FRAMES, stored, stored)) for key in FIELDS
        ]
        f.create_dataset("x-coordinate", data=cell_centres(stored).astype(np.float32))
        f.create_dataset("y-coordinate", data=cell_centres(stored).astype(np.float32))
        f.create_dataset("t-coordinate", data=(np.arange(N_FRAMES + 1) * SAVE_DT).astype(np.float32))
        f.attrs["eta"], f.attrs["zeta"], f.attrs["M"] = case.eta, case.zeta, case.mach
        # Batch mates advance in lock-step (each with its own CFL step), so trajectories of similar
        # signal speed are simulated together; each trajectory's result does not depend on this.
        initial = [initial_state(case, trajectory_rng(request.seed, name, s, i), size) for s, i in splits]
        order = np.argsort([-_signal_speed(state) for state in initial], kind="stable")
        for start in range(0, n_total, BATCH):
            members = order[start : start + BATCH]
            prim0 = torch.from_numpy(np.stack([initial[k] for k in members])).to(dtype)
            frames = simulate(prim0, case).double().numpy()  # [B, T, 4, X, Y]
            frames = _block_average(frames, size // stored)
            # channels of the solver (rho, vx, vy, p) -> datasets (Vx, Vy, density, pressure)
            for dataset, channel in zip(datasets, (1, 2, 0, 3)):
                for row, k in enumerate(members):
                    dataset[k] = frames[row, :, channel].astype(np.float32)
            bar.update(len(members))
    bar.close()
    return path


def _spec(name: str) -> GeneratorSpec:
    case = CASES[name]
    return GeneratorSpec(
        name=name,
        source="pdebench-cfd",
        write_raw=functools.partial(write_raw, name=name),
        size=64,
        stored_size=64,
        n_train=64,
        n_test=16,
        # 32^2: at 64^2 the 80 quick trajectories cost ~4 CPU-minutes (acoustic CFL over t in [0, 1]);
        # at 32^2 about 30 s. The loader resizes to the model grid either way.
        quick={"size": 32, "stored_size": 32, "n_train": 64, "n_test": 16},
        description=(
            f"compressible NS (gamma 5/3), M={case.mach:g}, eta=zeta={case.eta:g}, {case.init} init, "
            f"periodic: MUSCL + HLLC finite volume, SSP-RK2, explicit viscous sub-steps"
        ),
    )


GENERATORS: list[GeneratorSpec] = [_spec(name) for name in CASES]

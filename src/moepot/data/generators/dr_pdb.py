"""PDEBench 2-D diffusion–reaction (FitzHugh–Nagumo type): ``dr_pdb``.

PDE (raw-formats.md §6.3)::

    ∂t u = Du Δu + u − u³ − k − v,    ∂t v = Dv Δv + u − v,    Du = 1e-3, Dv = 5e-3, k = 5e-3,

on [−1, 1]² with homogeneous Neumann (no-flux) boundaries, t ∈ [0, 5], 101 stored frames
(frame 0 = the initial condition); u and v start as independent standard-normal white noise
per cell. As upstream: finite-volume cells with the 5-point Laplacian (the no-flux boundary
built into the matrix), method of lines, ``scipy.integrate.solve_ivp`` (RK45, scipy's default
tolerances) with the output times as ``t_eval``, one trajectory per call (the adaptive step
is the trajectory's own, as upstream).

Raw layout (PDEBench ``2D_diff-react_NA_NA.h5``): groups ``"0000"``, ``"0001"``, ...; each
``data`` float32 (T, Y, X, 2) with channels (u, v) and LZF compression, ``grid/x``,
``grid/y``, ``grid/t`` float32 and a YAML ``config`` attribute.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

from moepot.data.generators import GenerateRequest, GeneratorSpec
from moepot.data.generators.run import trajectory_batches, trajectory_rng
from moepot.data.generators.swe_pdb import block_average, cell_centres, write_pdebench_groups
from moepot.errors import ConfigError

NAME = "dr_pdb"
DOMAIN = (-1.0, 1.0)
T_FINAL = 5.0
N_FRAMES = 101
RAW_FILE = "2D_diff-react_NA_NA.h5"
BATCH = 16  # trajectories per write


@dataclass(frozen=True)
class ReactionParams:
    """Coefficients of the FitzHugh–Nagumo system (upstream values by default).

    ``reaction=False`` drops the reaction terms (pure diffusion, for conservation checks).
    """

    du: float = 1e-3
    dv: float = 5e-3
    k: float = 5e-3
    reaction: bool = True


@functools.lru_cache(maxsize=8)
def neumann_laplacian(size: int, length: float = DOMAIN[1] - DOMAIN[0]) -> scipy.sparse.csr_matrix:
    """5-point finite-volume Laplacian on ``size × size`` cells with no-flux walls.

    Acts on fields flattened row-major from ``[Y, X]`` (x fastest). A boundary cell has no flux
    through the wall, so every row sums to zero (the matrix conserves the total).
    Returns: ``[size², size²]`` CSR matrix.
    """
    dx = length / size
    ones = np.ones(size)
    second = scipy.sparse.diags([ones[1:], -2 * ones, ones[1:]], [-1, 0, 1], format="lil")
    second[0, 0] = -1.0
    second[-1, -1] = -1.0
    eye = scipy.sparse.identity(size, format="csr")
    return ((scipy.sparse.kron(eye, second) + scipy.sparse.kron(second, eye)) / dx**2).tocsr()


def reaction_diffusion_rhs(
    state: np.ndarray, laplacian: scipy.sparse.csr_matrix, params: ReactionParams
) -> np.ndarray:
    """``∂t`` of the flattened state ``[u (n), v (n)]``: ``[2n]``."""
    n = laplacian.shape[0]
    u, v = state[:n], state[n:]
    out = np.empty_like(state)
    out[:n] = params.du * (laplacian @ u)
    out[n:] = params.dv * (laplacian @ v)
    if params.reaction:
        out[:n] += u - u**3 - params.k - v
        out[n:] += u - v
    return out


def simulate_diffusion_reaction(
    u0: np.ndarray,
    v0: np.ndarray,
    times: np.ndarray,
    params: ReactionParams | None = None,
    *,
    rtol: float = 1e-3,
    atol: float = 1e-6,
) -> np.ndarray:
    """Method of lines with ``solve_ivp`` (RK45) from ``u0, v0: [Y, X]``, output at ``times``.

    Returns: ``[T, Y, X, 2]`` float64 with channels (u, v); frame 0 is the initial condition.
    """
    params = ReactionParams() if params is None else params
    size = u0.shape[0]
    laplacian = neumann_laplacian(size)
    state0 = np.concatenate([u0.ravel(), v0.ravel()]).astype(np.float64)
    solution = solve_ivp(
        lambda _t, y: reaction_diffusion_rhs(y, laplacian, params),
        (float(times[0]), float(times[-1])),
        state0,
        method="RK45",
        t_eval=times,
        rtol=rtol,
        atol=atol,
    )
    if not solution.success:
        raise RuntimeError(f"solve_ivp failed: {solution.message}")
    frames = solution.y.T.reshape(len(times), 2, size, size)  # [T, 2, Y, X]
    return frames.transpose(0, 2, 3, 1)


def noise_initial_condition(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's initial condition: i.i.d. N(0, 1) per cell, u drawn first, then v. Each ``[Y, X]``."""
    u0 = rng.standard_normal(size * size).reshape(size, size)
    v0 = rng.standard_normal(size * size).reshape(size, size)
    return u0, v0


def write_raw(request: GenerateRequest) -> Path:
    """Simulate ``n_train + n_test`` trajectories and write ``2D_diff-react_NA_NA.h5`` (train first)."""
    size, stored = request.size, request.stored_size
    if size % stored:
        raise ConfigError(
            f"{NAME}: --size {size} must be a multiple of --stored-size {stored} (cells are block-averaged)"
        )
    n_total = request.n_train + request.n_test
    times = np.linspace(0.0, T_FINAL, N_FRAMES)
    params = ReactionParams()
    bar = tqdm(total=n_total, desc=f"generate {NAME}", unit="traj", disable=not request.progress)

    def batches() -> Iterator[tuple[int, np.ndarray, list[dict]]]:
        start = 0
        for batch in trajectory_batches(request.n_train, request.n_test, BATCH):
            frames = []
            for split, index in batch:
                u0, v0 = noise_initial_condition(trajectory_rng(request.seed, NAME, split, index), size)
                frames.append(simulate_diffusion_reaction(u0, v0, times, params))
                bar.update(1)
            data = block_average(np.stack(frames), size // stored)  # [B, T, Y, X, 2]
            configs = [
                {
                    "generator": "moepot",
                    "name": NAME,
                    "split": split,
                    "index": index,
                    "seed": request.seed,
                    "Du": params.du,
                    "Dv": params.dv,
                    "k": params.k,
                    "size": size,
                }
                for split, index in batch
            ]
            yield start, data, configs
            start += len(batch)

    path = Path(request.raw_dir) / RAW_FILE
    grid = {"x": cell_centres(stored, *DOMAIN), "y": cell_centres(stored, *DOMAIN), "t": times}
    write_pdebench_groups(
        path, batches(), n_total=n_total, frame_shape=(stored, stored, 2), grid=grid, compression="lzf"
    )
    bar.close()
    return path


GENERATORS: list[GeneratorSpec] = [
    GeneratorSpec(
        name=NAME,
        source="pdebench-dr",
        write_raw=write_raw,
        size=64,
        stored_size=64,
        n_train=256,
        n_test=32,
        quick={"size": 64, "stored_size": 64, "n_train": 64, "n_test": 16},
        description="FitzHugh-Nagumo diffusion-reaction on [-1,1]^2, no-flux: method of lines, scipy solve_ivp (RK45)",
    )
]

"""FNO incompressible Navier–Stokes (vorticity form): ``ns2d_fno_1e-5``, ``ns2d_fno_1e-4``, ``ns2d_fno_1e-3``.

PDE on the unit torus, periodic (raw-formats.md §3.3)::

    ∂t w + u·∇w = ν Δw + f,   u = (∂y ψ, −∂x ψ),   −Δψ = w,
    f(x, y) = 0.1 (sin(2π(x + y)) + cos(2π(x + y))),

with the initial vorticity a Gaussian random field ``N(0, 7^{3/2} (−Δ + 49 I)^{−2.5})`` and
snapshots at t = 1, 2, ..., T. Numerics follow the upstream FNO generator: pseudo-spectral,
stream function by a spectral Poisson solve, the advection term u·∇w evaluated in physical
space and dealiased by the 2/3 rule, diffusion by Crank–Nicolson, advection and forcing
explicit. Upstream takes forward-Euler steps of 1e-4; here the explicit part is the
three-stage low-storage Runge–Kutta of Spalart, Moser & Rogers (1991) (Crank–Nicolson within
each stage), whose stability region contains the imaginary axis, so each trajectory can take
CFL-limited steps (about 1e-2) and the quick suite fits in seconds.

Raw layout: MATLAB v7.3 (HDF5 with a 512-byte MATLAB userblock) holding, in h5py order,
``u`` (T, S, S, N), ``a`` (S, S, N) and ``t`` (T, 1), float32; i.e. MATLAB sees
``u`` (N, S, S, T) with the first spatial index x.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from moepot.data.generators import GenerateRequest, GeneratorSpec
from moepot.data.generators.run import trajectory_batches, trajectory_rng
from moepot.errors import ConfigError, DataError
from moepot.io import atomic_path

# Upstream parameters per dataset id: viscosity, number of stored frames T, catalogue sizes.
VISCOSITY = {"ns2d_fno_1e-5": 1e-5, "ns2d_fno_1e-4": 1e-4, "ns2d_fno_1e-3": 1e-3}
N_FRAMES = {"ns2d_fno_1e-5": 20, "ns2d_fno_1e-4": 30, "ns2d_fno_1e-3": 50}
RAW_NAMES = {
    "ns2d_fno_1e-5": "NavierStokes_V1e-5_N{n}_T20.mat",
    "ns2d_fno_1e-4": "NavierStokes_V1e-4_N{n}_T30.mat",
    "ns2d_fno_1e-3": "NavierStokes_V1e-3_N{n}_T50.mat",
}

# Gaussian random field of the initial vorticity (upstream: alpha 2.5, tau 7, sigma tau^{1.5}).
GRF_ALPHA = 2.5
GRF_TAU = 7.0
FORCING_AMPLITUDE = 0.1

# Spalart–Moser–Rogers low-storage RK3 with Crank–Nicolson diffusion per stage:
# (1 − β_k dt L) w_k = (1 + α_k dt L) w_{k−1} + γ_k dt N(w_{k−1}) + ζ_k dt N(w_{k−2}).
RK3_GAMMA = (8 / 15, 5 / 12, 3 / 4)
RK3_ZETA = (0.0, -17 / 60, -5 / 12)
RK3_ALPHA = (4 / 15, 1 / 15, 1 / 6)  # = β_k (Crank–Nicolson split of the stage's diffusion)

COURANT = 0.7  # dt = COURANT · dx / max(|u| + |v|); the RK3 bound (√3 on the imaginary axis) is about 0.83
BATCH = 32  # trajectories simulated together
MATLAB_HEADER = "MATLAB 7.3 MAT-file, Platform: moepot, Created on: {date} HDF5 schema 1.00 ."


def upstream_forcing(size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The upstream forcing ``0.1 (sin(2π(x+y)) + cos(2π(x+y)))`` on the grid x_i = i/size.

    Returns: ``f: [X, Y]``.
    """
    coord = torch.arange(size, dtype=torch.float64) / size
    phase = 2 * math.pi * (coord[:, None] + coord[None, :])
    return (FORCING_AMPLITUDE * (torch.sin(phase) + torch.cos(phase))).to(dtype)


def grf_initial_vorticity(rng: np.random.Generator, size: int) -> np.ndarray:
    """One draw of the upstream initial vorticity on the grid x_i = i/size.

    Fourier coefficients with independent standard-normal real and imaginary parts, scaled by
    ``√2 σ (4π²|k|² + τ²)^{−α/2}`` (zero mean mode), real part of the inverse DFT without the
    1/size² factor (upstream multiplies the scale by size² and uses the normalised inverse).

    Returns: ``w0: [X, Y]`` float64.
    """
    k = np.fft.fftfreq(size, d=1.0 / size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sigma = GRF_TAU ** (0.5 * (2 * GRF_ALPHA - 2))
    scale = math.sqrt(2.0) * sigma * (4 * math.pi**2 * k2 + GRF_TAU**2) ** (-GRF_ALPHA / 2)
    scale[0, 0] = 0.0
    noise = rng.standard_normal((2, size, size))
    coeff = scale * (noise[0] + 1j * noise[1])
    return np.real(np.fft.ifft2(coeff)) * size**2


class VorticitySolver:
    """Pseudo-spectral solver of 2-D incompressible NS in vorticity form on the unit torus.

    Fields are ``[B, X, Y]`` with x_i = i/size (first spatial axis x); spectra are the
    ``rfft2`` of those, ``[B, X, Y//2 + 1]``.

    Args:
        size: grid side S.
        viscosity: ν.
        forcing: ``f: [X, Y]`` (time independent) or None for no forcing.
        dtype: real dtype of the computation (float32 for generation, float64 for tests).
        dealias: apply the 2/3 rule to the advection term (upstream does).
    """

    def __init__(
        self,
        size: int,
        viscosity: float,
        forcing: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        dealias: bool = True,
    ) -> None:
        self.size = size
        self.viscosity = viscosity
        self.dtype = dtype
        k = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)
        kx = k[:, None]
        ky = torch.fft.rfftfreq(size, d=1.0 / size, dtype=torch.float64)[None, :]
        # −Δ symbol; the derivative symbols drop the Nyquist mode (its derivative is not real).
        self.neg_laplacian = (4 * math.pi**2 * (kx**2 + ky**2)).to(dtype)
        nyquist_x = (kx.abs() == size // 2) & (size % 2 == 0)
        nyquist_y = (ky.abs() == size // 2) & (size % 2 == 0)
        self.ddx = (2j * math.pi * kx * ~nyquist_x).to(_complex(dtype))
        self.ddy = (2j * math.pi * ky * ~nyquist_y).to(_complex(dtype))
        inverse = torch.where(self.neg_laplacian > 0, 1 / self.neg_laplacian.clamp_min(1e-30), 0.0)
        self.inverse_neg_laplacian = inverse.to(dtype)
        k_cut = (2 / 3) * (size // 2)
        mask = (kx.abs() <= k_cut) & (ky.abs() <= k_cut) if dealias else torch.ones_like(kx * ky) > 0
        self.dealias_mask = mask.to(dtype)
        self.forcing_hat = None if forcing is None else torch.fft.rfft2(forcing.to(dtype))

    def to_spectral(self, w: torch.Tensor) -> torch.Tensor:
        """``w: [B, X, Y]`` -> ``ŵ: [B, X, Y//2+1]``."""
        return torch.fft.rfft2(w.to(self.dtype))

    def to_physical(self, w_hat: torch.Tensor) -> torch.Tensor:
        """``ŵ: [..., X, Y//2+1]`` -> ``w: [..., X, Y]``."""
        # the two 1-D transforms in turn are faster than irfft2 on CPU and give the same result
        return torch.fft.irfft(torch.fft.ifft(w_hat, dim=-2), n=self.size, dim=-1)

    def velocity(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u, v) = (∂y ψ, −∂x ψ)`` with ``−Δψ = w``; each ``[B, X, Y]``."""
        psi_hat = w_hat * self.inverse_neg_laplacian
        uv = self.to_physical(torch.stack([self.ddy * psi_hat, -self.ddx * psi_hat]))
        return uv[0], uv[1]

    def explicit_term(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Spectrum of ``−u·∇w + f`` with the advection term dealiased; ``[B, X, Y//2+1]``."""
        psi_hat = w_hat * self.inverse_neg_laplacian
        fields = torch.stack([self.ddy * psi_hat, -self.ddx * psi_hat, self.ddx * w_hat, self.ddy * w_hat])
        u, v, w_x, w_y = self.to_physical(fields)
        term = -self.dealias_mask * torch.fft.rfft2(u * w_x + v * w_y)
        if self.forcing_hat is not None:
            term = term + self.forcing_hat
        return term

    def step(self, w_hat: torch.Tensor, dt: torch.Tensor | float) -> torch.Tensor:
        """One RK3/Crank–Nicolson step; ``dt`` a float or per trajectory ``[B, 1, 1]``."""
        diffusion = -self.viscosity * self.neg_laplacian
        previous = None
        for gamma, zeta, alpha in zip(RK3_GAMMA, RK3_ZETA, RK3_ALPHA):
            current = self.explicit_term(w_hat)
            rhs = (1 + alpha * dt * diffusion) * w_hat + gamma * dt * current
            if previous is not None:
                rhs = rhs + zeta * dt * previous
            w_hat = rhs / (1 - alpha * dt * diffusion)
            previous = current
        return w_hat

    def stable_substeps(self, w_hat: torch.Tensor, interval: float, courant: float) -> torch.Tensor:
        """Per trajectory number of equal steps covering ``interval`` at the given Courant number.

        Returns: ``[B]`` long, at least 1.
        """
        u, v = self.velocity(w_hat)
        speed = (u.abs().amax(dim=(-2, -1)) + v.abs().amax(dim=(-2, -1))).double()
        if not bool(torch.isfinite(speed).all()):
            raise FloatingPointError("vorticity solver: the velocity became non-finite (unstable run)")
        dt_max = courant * (1.0 / self.size) / speed.clamp_min(1e-12)
        return torch.ceil(interval / dt_max).long().clamp_min(1)

    def simulate(
        self, w0: torch.Tensor, n_frames: int, interval: float = 1.0, courant: float = COURANT
    ) -> torch.Tensor:
        """Integrate from ``w0`` and record after every ``interval`` of time.

        Each trajectory takes its own CFL-limited step (chosen at the start of each interval),
        so a trajectory's result does not depend on which others share its batch.

        Args:
            w0: initial vorticity ``[B, X, Y]``.
            n_frames: number of recorded frames (times interval, 2·interval, ...).

        Returns: ``w: [B, X, Y, n_frames]`` at t = interval·(1..n_frames).
        """
        w_hat = self.to_spectral(w0)
        frames = []
        for _ in range(n_frames):
            substeps = self.stable_substeps(w_hat, interval, courant)
            dt = (interval / substeps.to(torch.float64)).to(self.dtype)[:, None, None]
            for k in range(int(substeps.max())):
                stepped = self.step(w_hat, dt)
                active = (k < substeps)[:, None, None]
                w_hat = stepped if bool(active.all()) else torch.where(active, stepped, w_hat)
            if not bool(torch.isfinite(w_hat).all()):
                raise FloatingPointError("vorticity solver: the vorticity became non-finite (unstable run)")
            frames.append(self.to_physical(w_hat))
        return torch.stack(frames, dim=-1)


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _write_matlab_userblock(path: Path) -> None:
    """Write the MATLAB v7.3 header into the (already reserved) 512-byte HDF5 userblock."""
    text = MATLAB_HEADER.format(date=time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0)))
    header = text.encode("ascii").ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header)


def write_raw(request: GenerateRequest, *, name: str, dtype: torch.dtype = torch.float32) -> Path:
    """Simulate ``n_train + n_test`` trajectories and write the upstream ``.mat`` (v7.3) file.

    Trajectories ``0..n_train-1`` are the training split, the last ``n_test`` the test split
    (the FNO convention the converter applies). Frames are subsampled from the simulation grid
    to ``stored_size`` by striding, as upstream stores 64 of its 256 points.
    """
    size, stored = request.size, request.stored_size
    if size % stored:
        raise ConfigError(
            f"{name}: --size {size} must be a multiple of --stored-size {stored} (frames are subsampled by striding)"
        )
    stride = size // stored
    n_frames = N_FRAMES[name]
    n_total = request.n_train + request.n_test
    solver = VorticitySolver(size, VISCOSITY[name], upstream_forcing(size, dtype), dtype=dtype)
    path = Path(request.raw_dir) / RAW_NAMES[name].format(n=n_total)
    bar = tqdm(total=n_total, desc=f"generate {name}", unit="traj", disable=not request.progress)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            u = f.create_dataset(
                "u", (n_frames, stored, stored, n_total), "f4", chunks=(n_frames, stored, stored, 1)
            )
            a = f.create_dataset("a", (stored, stored, n_total), "f4", chunks=(stored, stored, 1))
            f.create_dataset("t", data=np.arange(1, n_frames + 1, dtype=np.float32).reshape(n_frames, 1))
            for key in ("u", "a", "t"):
                f[key].attrs["MATLAB_class"] = np.bytes_("single")
            start = 0
            for batch in trajectory_batches(request.n_train, request.n_test, BATCH):
                w0 = np.stack(
                    [grf_initial_vorticity(trajectory_rng(request.seed, name, s, i), size) for s, i in batch]
                )
                try:
                    w = solver.simulate(torch.from_numpy(w0), n_frames).numpy()  # [B, X, Y, T]
                except FloatingPointError as exc:
                    raise DataError(
                        f"{name}: trajectories {batch[0]}..{batch[-1]}: {exc}; try a larger --size"
                    ) from exc
                stop = start + len(batch)
                # MATLAB (n, x, y, t) is h5py (t, y, x, n).
                u[..., start:stop] = w[:, ::stride, ::stride, :].transpose(3, 2, 1, 0)
                a[..., start:stop] = w0[:, ::stride, ::stride].transpose(2, 1, 0)
                bar.update(len(batch))
                start = stop
        _write_matlab_userblock(tmp)
    bar.close()
    return path


def _spec(name: str) -> GeneratorSpec:
    return GeneratorSpec(
        name=name,
        source="fno",
        write_raw=functools.partial(write_raw, name=name),
        size=64,
        stored_size=64,
        n_train=256,
        n_test=32,
        quick={"size": 64, "stored_size": 64, "n_train": 64, "n_test": 16},
        description=(
            f"vorticity NS on the unit torus, nu={VISCOSITY[name]:g}, T={N_FRAMES[name]}: "
            "pseudo-spectral, 2/3 dealiasing, Crank-Nicolson diffusion + RK3 advection"
        ),
    )


GENERATORS: list[GeneratorSpec] = [_spec(name) for name in VISCOSITY]

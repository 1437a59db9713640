"""Building blocks shared by DPOT and MoE-POT: activations, coordinates, patch embedding,
time aggregation and the AFNO spectral mixer.

Parameter names and shapes are those of the original code (``proj.0``, ``w``, ``gamma``,
``w1`` ...) so published checkpoints load strictly; see architecture.md for the table.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def activation(name: str) -> nn.Module:
    """A fresh activation module by the original's names (``gelu``, ``tanh``, ``relu`` ...)."""
    makers = {
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "relu": nn.ReLU,
        "leaky_relu": lambda: nn.LeakyReLU(0.1),
        "softplus": nn.Softplus,
        "elu": nn.ELU,
        "silu": nn.SiLU,
    }
    return makers[name]()


def append_coordinates(x: torch.Tensor) -> torch.Tensor:
    """Append linspace(0, 1) coordinates along X, Y and T as three extra channels.

    Args:
        x: [B, X, Y, T, C]
    Returns:
        [B, X, Y, T, C + 3], the last three channels are the x, y and t coordinates.
    """
    b, nx, ny, nt, _ = x.shape
    axes = [torch.linspace(0, 1, n, dtype=x.dtype, device=x.device) for n in (nx, ny, nt)]
    gx, gy, gt = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack([gx, gy, gt], dim=-1).expand(b, nx, ny, nt, 3)
    return torch.cat([x, grid], dim=-1)


def conv1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 ``conv`` applied as a batched matmul over the flattened grid.

    Same result as ``conv(x)``; 2-4x faster than ``conv2d`` on CPU for the latent shapes here.
    x: [N, C_in, X, Y] -> [N, C_out, X, Y].
    """
    n, c, nx, ny = x.shape
    y = torch.matmul(conv.weight.flatten(1), x.reshape(n, c, nx * ny))
    if conv.bias is not None:
        y = y + conv.bias[:, None]
    return y.reshape(n, -1, nx, ny)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches to a D-wide latent: conv(p, stride p) -> act -> 1x1 conv.

    Args:
        in_chans: input channels (physical channels + 3 coordinates).
        hidden: width between the two convolutions (the original uses ``out_channels * p + 3``).
        out_dim: latent width D.
    """

    def __init__(self, patch_size: int, in_chans: int, hidden: int, out_dim: int, act: str = "gelu") -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, hidden, kernel_size=patch_size, stride=patch_size),
            activation(act),
            nn.Conv2d(hidden, out_dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C_in, X, Y] -> [N, D, X/p, Y/p]."""
        return self.proj(x)


class TimeAggregator(nn.Module):
    """Collapse T_in latent frames into one with per-frame D x D weights.

    ``exp_mlp``: out[..., j] = sum_t sum_i w[t, i, j] * x[..., t, i] * cos(t_lin[t] * gamma[i])
    with t_lin = linspace(0, 1, T); ``mlp``: the same without the cosine factor.
    """

    def __init__(self, n_timesteps: int, dim: int, kind: str = "exp_mlp") -> None:
        super().__init__()
        self.kind = kind
        self.w = nn.Parameter(torch.empty(n_timesteps, dim, dim))
        if kind == "exp_mlp":
            self.gamma = nn.Parameter(torch.empty(1, dim))
        # On the meta device (parameter counting) there are no values to set, and normal_ /
        # linspace there would import torch._dynamo (seconds).
        if not self.w.is_meta:
            with torch.no_grad():
                nn.init.normal_(self.w, std=1.0 / (n_timesteps * dim**0.5))
                if kind == "exp_mlp":
                    self.gamma.copy_(2 ** torch.linspace(-10, 10, dim, device=self.w.device).unsqueeze(0))

    def frame_scales(self) -> torch.Tensor | None:
        """[T, D] cosine embedding cos(t_lin[t] * gamma[i]) for exp_mlp; None for mlp."""
        if self.kind != "exp_mlp":
            return None
        n_t = self.w.shape[0]
        t = torch.linspace(0, 1, n_t, dtype=self.w.dtype, device=self.w.device).unsqueeze(-1)  # [T, 1]
        return torch.cos(t @ self.gamma)

    def frame_weights(self) -> torch.Tensor:
        """[T, D, D] effective weight per frame (w scaled by the cosine embedding for exp_mlp)."""
        scales = self.frame_scales()
        return self.w if scales is None else self.w * scales.unsqueeze(-1)

    def per_frame(self, left: torch.Tensor) -> torch.Tensor:
        """``left @ frame_weights()[t]`` for every frame t, without forming the [T, D, D] weights.

        left: [N, D] -> [T, N, D]. The cosine scales the rows of ``w``, so it scales the
        columns of ``left`` instead (T N D multiplications instead of T D D).
        """
        scales = self.frame_scales()
        n_t = self.w.shape[0]
        lhs = left.expand(n_t, *left.shape) if scales is None else left * scales[:, None, :]
        return torch.bmm(lhs, self.w)

    def summed_weights(self) -> torch.Tensor:
        """[D, D] sum over the frames of ``frame_weights()``."""
        scales = self.frame_scales()
        if scales is None:
            return self.w.sum(dim=0)
        # frame by frame: no [T, D, D] temporary (a broadcast multiply over it is 3x slower)
        return sum(w_t * s_t[:, None] for w_t, s_t in zip(self.w.unbind(0), scales.unbind(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, X', Y', T, D] -> [B, X', Y', D]."""
        b, nx, ny, nt, d = x.shape
        weights = self.frame_weights().reshape(nt * d, -1)  # [(T D), D]
        return (x.reshape(b, nx, ny, nt * d) @ weights).reshape(b, nx, ny, -1)


# Latent grids up to this many points (8 x 8: res 64 at patch 8) take the corner's Fourier
# transform as a matmul with a cached DFT matrix: measured on 2 CPU threads at D = 512, an 8 x 8
# AFNO layer is ~20% faster that way (forward and backward), a 16 x 16 one ~10% slower.
DFT_MAX_POINTS = 64


@functools.lru_cache(maxsize=64)
def corner_dft(nx: int, ny: int, mx: int, my: int, dtype: torch.dtype,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The real-linear maps of ``rfft2`` onto the low corner and of its zero-padded ``irfft2``.

    With M = mx * my and fields flattened x-major (index x * ny + y):

    - ``forward`` [2M, nx ny]: a real field -> (Re; Im) of ``rfft2(field, norm="ortho")[:mx, :my]``;
    - ``inverse`` [nx ny, 2M]: (Re; Im) of a corner -> ``irfft2`` (``s=(nx, ny)``, ortho) of the
      spectrum that is that corner and zero elsewhere.

    Built column by column from ``torch.fft`` itself (in float64), so they inherit its
    conventions exactly, including ``irfft2`` ignoring the imaginary parts it must ignore.
    """
    points, modes = nx * ny, mx * my
    impulses = torch.eye(points, dtype=torch.float64).reshape(points, nx, ny)
    spectra = torch.fft.rfft2(impulses, norm="ortho")[:, :mx, :my].reshape(points, modes)
    forward = torch.cat([spectra.real, spectra.imag], dim=1).t()
    basis = torch.eye(2 * modes, dtype=torch.float64)
    corners = torch.complex(basis[:, :modes], basis[:, modes:]).reshape(2 * modes, mx, my)
    inverse = torch.fft.irfft2(corners, s=(nx, ny), norm="ortho").reshape(2 * modes, points).t()
    return forward.to(device, dtype).contiguous(), inverse.to(device, dtype).contiguous()


class AFNO2D(nn.Module):
    """Adaptive Fourier neural-operator mixer with block-diagonal complex weights.

    Spectrum F = rfft2(h) over (X, Y) with ``norm="ortho"``; only the low corner
    F[:modes, :modes] is processed (negative X frequencies are dropped too, the original's
    quirk that published checkpoints depend on): o1 = act(Re) + i act(Im) of (F W1 + b1),
    o2 = o1 W2 + b2, per block of ``D / n_blocks`` channels; all other modes are zero. Then
    irfft2 back to the grid and add the input (the mixer's own skip).

    The original fills four zero tensors and runs eight real einsums per layer. We mix only
    the corner, with one complex einsum per layer of the MLP. On small latent grids
    (<= :data:`DFT_MAX_POINTS` points) the corner's transform and its inverse are matmuls with
    cached DFT matrices (:func:`corner_dft`), which beats an FFT of 8 x 8 points on CPU;
    larger grids, and every grid under ``torch.compile`` (whose graphs would rebuild the
    matrices on every call), use ``rfft2`` / ``irfft2``; under ``torch.compile`` the block MLP
    runs in real arithmetic (:meth:`mix_corner_real`). Every path equals the original's to
    float rounding.

    Parameters: ``w1``, ``w2`` [2, nb, bs, bs] and ``b1``, ``b2`` [2, nb, bs] (index 0 the real
    part, 1 the imaginary part).
    """

    def __init__(self, width: int, n_blocks: int, modes: int, act: str = "gelu") -> None:
        super().__init__()
        self.n_blocks = n_blocks
        self.block_size = width // n_blocks
        self.modes = modes
        self.act = activation(act)
        bs = self.block_size
        scale = 1.0 / (bs * bs)
        self.w1 = nn.Parameter(torch.empty(2, n_blocks, bs, bs).uniform_(0, scale))
        self.b1 = nn.Parameter(torch.empty(2, n_blocks, bs).uniform_(0, scale))
        self.w2 = nn.Parameter(torch.empty(2, n_blocks, bs, bs).uniform_(0, scale))
        self.b2 = nn.Parameter(torch.empty(2, n_blocks, bs).uniform_(0, scale))

    @staticmethod
    def _complex(p: torch.Tensor) -> torch.Tensor:
        return torch.complex(p[0], p[1])

    def mix_corner(self, corner: torch.Tensor) -> torch.Tensor:
        """The complex two-layer block MLP on the kept modes: [B, M, D] complex -> [B, M, D]."""
        b, m, d = corner.shape
        blocks = corner.reshape(b, m, self.n_blocks, self.block_size)
        o1 = torch.einsum("...bi,bio->...bo", blocks, self._complex(self.w1)) + self._complex(self.b1)
        # act(Re) + i act(Im): one elementwise pass over the interleaved (re, im) pairs
        o1 = torch.view_as_complex(self.act(torch.view_as_real(o1)))
        o2 = torch.einsum("...bi,bio->...bo", o1, self._complex(self.w2)) + self._complex(self.b2)
        return o2.reshape(b, m, d)

    def mix_corner_real(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`mix_corner` in real arithmetic: (Re, Im) [B, M, D] -> (Re, Im) [B, M, D].

        Per block, (x_re + i x_im)(W_re + i W_im) is the real product
        [x_re | x_im] @ [[W_re, W_im], [-W_im, W_re]]; one real einsum per layer of the MLP.
        Used under ``torch.compile``: Inductor's GPU code generation has no complex dtypes
        (a complex pointwise op or ``view_as_complex`` in the graph fails to compile there).
        """
        b, m, d = re.shape
        nb, bs = self.n_blocks, self.block_size

        def real_block(p: torch.Tensor) -> torch.Tensor:  # [2, nb, bs, bs] -> [nb, 2bs, 2bs]
            return torch.cat([torch.cat([p[0], p[1]], dim=-1), torch.cat([-p[1], p[0]], dim=-1)], dim=-2)

        x = torch.cat([re.reshape(b, m, nb, bs), im.reshape(b, m, nb, bs)], dim=-1)  # [B, M, nb, 2bs]
        x = torch.einsum("...bi,bio->...bo", x, real_block(self.w1)) + torch.cat([self.b1[0], self.b1[1]], dim=-1)
        x = self.act(x)  # act(Re) and act(Im)
        x = torch.einsum("...bi,bio->...bo", x, real_block(self.w2)) + torch.cat([self.b2[0], self.b2[1]], dim=-1)
        return x[..., :bs].reshape(b, m, d), x[..., bs:].reshape(b, m, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: [B, D, X, Y] -> [B, D, X, Y], a channels-last view ([B, X, Y, D] in memory).

        The mixer works channels last; a channels-last ``h`` costs no layout copy.
        """
        b, d, nx, ny = h.shape
        h_last = h.permute(0, 2, 3, 1)  # [B, X, Y, D]
        field = h_last.float()
        mx, my = min(self.modes, nx), min(self.modes, ny // 2 + 1)
        if nx * ny <= DFT_MAX_POINTS and not torch.compiler.is_compiling():
            # the transforms in float32 even under autocast (as the original's FFTs); the block
            # MLP follows autocast, as the original's einsums do
            full_precision = torch.autocast(field.device.type, enabled=False)
            forward, inverse = corner_dft(nx, ny, mx, my, field.dtype, field.device)
            modes = mx * my
            with full_precision:
                corner = torch.matmul(forward, field.reshape(b, nx * ny, d))  # [B, 2M, D]: Re; Im
            out = self.mix_corner(torch.complex(corner[:, :modes], corner[:, modes:]))  # [B, M, D]
            with full_precision:
                out = torch.cat([out.real, out.imag], dim=1).float()  # [B, 2M, D]
                mixed = torch.matmul(inverse, out).reshape(b, nx, ny, d)
        else:
            corner = torch.fft.rfft2(field, dim=(1, 2), norm="ortho")[:, :mx, :my].reshape(b, mx * my, d)
            if torch.compiler.is_compiling():  # no complex tensor between the transforms
                re, im = self.mix_corner_real(corner.real, corner.imag)
                out = torch.complex(re.float(), im.float())
            else:
                out = self.mix_corner(corner).to(corner.dtype)
            # irfft2 zero-pads the corner to the (X, Y//2+1) spectrum: every other mode is zero
            mixed = torch.fft.irfft2(out.reshape(b, mx, my, d), s=(nx, ny), dim=(1, 2), norm="ortho")
        # h_last first: the sum takes its (channels-last) layout
        return (h_last + mixed.to(h.dtype)).permute(0, 3, 1, 2)

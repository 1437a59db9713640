"""A Fourier neural operator (Li et al., 2021) baseline with the package's input convention.

Our own small implementation rather than a wrapper of the ``neuraloperator`` library: its
install pulls in wandb, OpenTelemetry, tensorly and a dozen more packages, far more than a
2-D FNO needs, and the core install of moepot stays light. The layers follow the classic FNO-2D:

    x [B, X, Y, T_in, C] -> frames and channels flattened, plus (x, y) coordinates
    -> lift (Linear to width) -> ``depth`` x [spectral conv + 1x1 conv, GELU (not after the last)]
    -> projection (Linear width -> 128, GELU, Linear -> T_out * C) -> [B, X, Y, T_out, C]

The spectral convolution keeps ``modes`` positive and negative frequencies along X and
``modes`` along Y (clipped to what the grid holds), so the model runs on any grid, also
rectangular ones. A linear classification head on the spatially pooled latent gives the
``cls_logits`` of the common contract.
"""

from __future__ import annotations

import torch
from torch import nn

from moepot.models.base import ModelOutput, NeuralOperator
from moepot.models.config import ModelConfig
from moepot.models.layers import activation


class SpectralConv2d(nn.Module):
    """Linear map of the low Fourier modes: [B, C_in, X, Y] -> [B, C_out, X, Y].

    ``weight`` [2, C_in, C_out, modes, modes, 2]: index 0 of the first axis acts on the
    non-negative X frequencies, 1 on the negative ones; the last axis holds real and imaginary
    parts. Uses the unnormalised FFT convention, so the same weights act alike on a
    band-limited field sampled at any resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(
            torch.empty(2, in_channels, out_channels, modes, modes, 2).uniform_(0, scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, nx, ny = x.shape
        spectrum = torch.fft.rfft2(x.float())  # [B, C_in, X, Y//2+1]
        mx = min(self.modes, nx // 2)
        my = min(self.modes, spectrum.shape[-1])
        weight = torch.view_as_complex(self.weight)  # [2, C_in, C_out, m, m]
        out = spectrum.new_zeros(b, weight.shape[2], nx, spectrum.shape[-1])
        mix = "bixy,ioxy->boxy"
        out[:, :, :mx, :my] = torch.einsum(mix, spectrum[:, :, :mx, :my], weight[0, :, :, :mx, :my])
        if mx:
            out[:, :, nx - mx :, :my] = torch.einsum(
                mix, spectrum[:, :, nx - mx :, :my], weight[1, :, :, :mx, :my]
            )
        return torch.fft.irfft2(out, s=(nx, ny)).to(x.dtype)


class FNO(NeuralOperator):
    """FNO-2D on [B, X, Y, T_in, C] -> [B, X, Y, T_out, C_out]; ``aux_loss`` is always 0.

    Uses ``embed_dim`` (width), ``depth`` (Fourier layers), ``modes``, ``act`` and the channel
    and time sizes of the config; the grid is free.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        cfg = config
        width = cfg.embed_dim
        self.lift = nn.Linear(cfg.in_timesteps * cfg.in_channels + 2, width)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, cfg.modes) for _ in range(cfg.depth))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, kernel_size=1) for _ in range(cfg.depth))
        self.act = activation(cfg.act)
        self.project = nn.Sequential(
            nn.Linear(width, 128), activation(cfg.act), nn.Linear(128, cfg.out_timesteps * cfg.out_channels)
        )
        self.cls_head = nn.Linear(width, cfg.n_cls)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """x: [B, X, Y, T_in, C] -> ModelOutput(pred [B, X, Y, T_out, C_out], cls [B, n_cls], 0)."""
        cfg = self.config
        self.check_input(x, None)
        b, nx, ny, nt, nc = x.shape
        gx, gy = torch.meshgrid(
            torch.linspace(0, 1, nx, dtype=x.dtype, device=x.device),
            torch.linspace(0, 1, ny, dtype=x.dtype, device=x.device),
            indexing="ij",
        )
        coords = torch.stack([gx, gy], dim=-1).expand(b, nx, ny, 2)
        h = self.lift(torch.cat([x.reshape(b, nx, ny, nt * nc), coords], dim=-1))  # [B, X, Y, W]
        h = h.permute(0, 3, 1, 2)  # [B, W, X, Y]
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            h = spectral(h) + pointwise(h)
            if i < len(self.spectral) - 1:
                h = self.act(h)
        cls_logits = self.cls_head(h.mean(dim=(2, 3)))
        pred = self.project(h.permute(0, 2, 3, 1))  # [B, X, Y, T_out * C]
        pred = pred.reshape(b, nx, ny, cfg.out_timesteps, cfg.out_channels)
        return ModelOutput(pred, cls_logits, x.new_zeros(()))

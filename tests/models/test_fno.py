"""The FNO baseline: its spectral convolution against an explicit DFT, resolution invariance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moepot import build_model
from moepot.models.fno import FNO, SpectralConv2d

from .conftest import rel_err


def spectral_conv_by_dft(layer: SpectralConv2d, x: torch.Tensor) -> torch.Tensor:
    """Second implementation: explicit complex exponentials, full (two-sided) spectrum."""
    b, c, nx, ny = x.shape
    w = torch.view_as_complex(layer.weight).to(torch.complex128)  # [2, Ci, Co, m, m]
    m = layer.modes
    kx = torch.arange(nx, dtype=torch.float64)
    ky = torch.arange(ny, dtype=torch.float64)
    ex = torch.exp(-2j * math.pi * torch.outer(kx, kx) / nx)  # [k, x]
    ey = torch.exp(-2j * math.pi * torch.outer(ky, ky) / ny)
    spec = torch.einsum("kx,ly,bcxy->bckl", ex, ey, x.to(torch.complex128))  # full 2-D DFT
    out_spec = torch.zeros(b, w.shape[2], nx, ny, dtype=torch.complex128)
    mx, my = min(m, nx // 2), min(m, ny // 2 + 1)
    for i in range(mx):
        for j in range(my):
            for kx_idx, wi in ((i, 0), (nx - 1 - i, 1)):
                sel = i if wi == 0 else mx - 1 - i
                coeff = w[wi, :, :, sel, j]
                out_spec[:, :, kx_idx, j] = torch.einsum("bc,co->bo", spec[:, :, kx_idx, j], coeff)
    # real output: keep the half spectrum and let Hermitian symmetry fill the rest (as irfft2)
    half = out_spec[:, :, :, : ny // 2 + 1]
    return torch.fft.irfft2(half, s=(nx, ny)).to(torch.float32)


@pytest.mark.parametrize("grid,modes", [((12, 12), 3), ((10, 16), 4), ((8, 8), 8), ((9, 7), 5), ((7, 10), 4)])
def test_spectral_conv_matches_explicit_dft(grid, modes):
    torch.manual_seed(0)
    layer = SpectralConv2d(3, 2, modes)
    x = torch.randn(2, 3, *grid)
    assert rel_err(layer(x), spectral_conv_by_dft(layer, x)) < 1e-5


def test_spectral_conv_is_resolution_invariant_on_band_limited_fields():
    """The same band-limited field sampled on 16^2 and 32^2 grids gives the same output field."""
    torch.manual_seed(0)
    layer = SpectralConv2d(2, 2, modes=4)

    def field(n: int) -> torch.Tensor:
        s = torch.arange(n, dtype=torch.float64) / n
        xx, yy = torch.meshgrid(s, s, indexing="ij")
        a = torch.sin(2 * math.pi * (xx + 2 * yy)) + 0.5 * torch.cos(2 * math.pi * 3 * xx)
        b = torch.cos(2 * math.pi * (2 * xx - yy))
        return torch.stack([a, b])[None].float()

    coarse, fine = layer(field(16)), layer(field(32))
    assert torch.allclose(coarse, fine[..., ::2, ::2], atol=1e-5)


def test_fno_contract_on_a_rectangular_grid():
    model = build_model("fno", in_channels=3, out_channels=3, in_timesteps=4, out_timesteps=2, n_cls=5)
    x = torch.randn(2, 24, 16, 4, 3)
    out = model(x)
    assert out.pred.shape == (2, 24, 16, 2, 3)
    assert out.cls_logits.shape == (2, 5)
    assert float(out.aux_loss) == 0.0
    assert model.moe_layers() == []
    out.pred.sum().backward()
    assert all(
        p.grad is not None
        for p in model.parameters()
        if p is not model.cls_head.weight and p is not model.cls_head.bias
    )


def fno_by_formula(model: FNO, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The FNO of the module docstring written out, on ``model``'s parameters: each point's frames
    and channels flattened (index t * C + c) then its (x, y) coordinates in [0, 1], the lift,
    ``depth`` x [explicit-DFT spectral conv + 1x1 conv], GELU between the layers (not after the
    last), the projection; the class head on the spatial mean. -> (pred, cls_logits)."""
    b, nx, ny, nt, nc = x.shape
    cfg = model.config
    cx = torch.linspace(0, 1, nx)[:, None].expand(nx, ny)
    cy = torch.linspace(0, 1, ny)[None, :].expand(nx, ny)
    coords = torch.stack([cx, cy], dim=-1).expand(b, nx, ny, 2)
    inputs = torch.cat([x.reshape(b, nx, ny, nt * nc), coords], dim=-1)
    h = F.linear(inputs, model.lift.weight, model.lift.bias).permute(0, 3, 1, 2)
    for i in range(cfg.depth):
        pointwise = model.pointwise[i]
        h = spectral_conv_by_dft(model.spectral[i], h) + F.conv2d(h, pointwise.weight, pointwise.bias)
        if i < cfg.depth - 1:
            h = F.gelu(h)
    cls_logits = F.linear(h.mean(dim=(2, 3)), model.cls_head.weight, model.cls_head.bias)
    first, _, last = model.project
    pred = F.linear(F.gelu(F.linear(h.permute(0, 2, 3, 1), first.weight, first.bias)), last.weight, last.bias)
    return pred.reshape(b, nx, ny, cfg.out_timesteps, cfg.out_channels), cls_logits


def test_fno_forward_matches_its_formula():
    torch.manual_seed(0)
    model = build_model("fno", in_channels=2, out_channels=2, in_timesteps=3, out_timesteps=2, embed_dim=8,
                        depth=3, modes=3, n_cls=4)  # fmt: skip
    x = torch.randn(2, 12, 10, 3, 2)
    with torch.no_grad():
        out = model(x)
        pred, cls_logits = fno_by_formula(model, x)
    assert rel_err(out.pred, pred) < 1e-5
    assert rel_err(out.cls_logits, cls_logits) < 1e-5

"""Layers against second implementations written the original's way."""

from __future__ import annotations

import pytest
import torch
from benchmarks.original_formulation import afno_original_way

from moepot.models import layers
from moepot.models.layers import AFNO2D, TimeAggregator, append_coordinates

from .conftest import rel_err


def _use_path(transform: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Select the AFNO path: cached DFT matrices, FFTs with a complex block MLP, or the
    ``torch.compile`` path (FFTs with the block MLP in real arithmetic)."""
    monkeypatch.setattr(layers, "DFT_MAX_POINTS", 1024 if transform == "dft" else 0)
    if transform == "compile-path":
        monkeypatch.setattr(layers.torch.compiler, "is_compiling", lambda: True)


@pytest.mark.parametrize("transform", ["dft", "fft", "compile-path"])
@pytest.mark.parametrize("grid,modes", [((8, 8), 32), ((16, 16), 3), ((12, 10), 4), ((6, 14), 5), ((7, 9), 32)])
def test_afno_matches_the_original_formulation(grid, modes, transform, monkeypatch):
    """Every way of transforming the corner (cached DFT matrices on small grids, FFTs on large
    ones, the compiled graph's real block MLP) against the original's FFT-and-eight-einsums,
    values and gradients; odd sizes too."""
    _use_path(transform, monkeypatch)
    torch.manual_seed(0)
    layer = AFNO2D(width=16, n_blocks=4, modes=modes)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()  # weights of both signs, so the activation matters
    h = torch.randn(3, 16, *grid, requires_grad=True)
    ours = layer(h)
    ref = afno_original_way(layer, h)
    assert rel_err(ours, ref) < 1e-5
    g_ours = torch.autograd.grad(ours.square().sum(), [h, layer.w1, layer.b2])
    g_ref = torch.autograd.grad(ref.square().sum(), [h, layer.w1, layer.b2])
    for a, b in zip(g_ours, g_ref):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("transform", ["dft", "fft", "compile-path"])
def test_afno_under_autocast_keeps_the_transforms_in_float32(transform, monkeypatch):
    """Under bfloat16 autocast only the block MLP runs in bfloat16 (as the original's einsums
    do); the result stays close to the float32 one and comes back in the input's dtype."""
    _use_path(transform, monkeypatch)
    torch.manual_seed(0)
    layer = AFNO2D(width=16, n_blocks=4, modes=32)
    h = torch.randn(2, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(h)
    assert low.dtype == torch.float32
    assert rel_err(low, layer(h)) < 2e-2


def test_afno_leaves_high_modes_alone():
    """Only the low corner is mixed: a field made of a mode outside the corner passes through
    the mixer unchanged except for the corner's bias response (same for every input)."""
    torch.manual_seed(0)
    layer = AFNO2D(width=8, n_blocks=2, modes=2)
    nx = ny = 16
    xs = torch.arange(nx, dtype=torch.float32)
    wave = torch.cos(2 * torch.pi * 5 * xs / nx)[:, None] * torch.cos(2 * torch.pi * 6 * xs / ny)[None, :]
    h = wave.expand(1, 8, nx, ny).clone()
    zero = torch.zeros_like(h)
    assert torch.allclose(layer(h) - h, layer(zero) - zero, atol=1e-5)


@pytest.mark.parametrize("kind", ["exp_mlp", "mlp"])
def test_time_aggregation_matches_its_formula(kind):
    torch.manual_seed(0)
    agg = TimeAggregator(n_timesteps=5, dim=8, kind=kind)
    x = torch.randn(2, 3, 4, 5, 8)
    t = torch.linspace(0, 1, 5)
    embed = torch.cos(t[:, None] * agg.gamma) if kind == "exp_mlp" else torch.ones(5, 8)
    expected = torch.einsum("tij,...ti->...j", agg.w, x * embed)
    assert rel_err(agg(x), expected) < 1e-6


def test_time_aggregation_gamma_init_is_powers_of_two():
    agg = TimeAggregator(n_timesteps=3, dim=5)
    assert torch.allclose(agg.gamma, torch.tensor([[2.0**-10, 2.0**-5, 1.0, 2.0**5, 2.0**10]]))


def test_coordinates_span_unit_interval_per_axis():
    x = torch.zeros(2, 4, 3, 5, 1)
    out = append_coordinates(x)
    assert out.shape == (2, 4, 3, 5, 4)
    assert torch.allclose(out[0, :, 0, 0, 1], torch.linspace(0, 1, 4))
    assert torch.allclose(out[1, 0, :, 0, 2], torch.linspace(0, 1, 3))
    assert torch.allclose(out[0, 2, 1, :, 3], torch.linspace(0, 1, 5))

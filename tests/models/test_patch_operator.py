"""The shared trunk: decoder layout and instance normalisation, checked analytically."""

from __future__ import annotations

import pytest
import torch

from moepot import build_model

TINY = dict(img_size=16, patch_size=4, in_channels=2, out_channels=2, in_timesteps=3, embed_dim=16,
            depth=1, n_blocks=2, modes=3, out_layer_dim=8, n_cls=3)  # fmt: skip


@pytest.mark.parametrize("name", ["dpot", "moepot"])
def test_decoder_channel_layout_is_time_major(name):
    """Flat decoder channel t * C + c lands at pred[..., t, c]."""
    model = build_model(name, **TINY, out_timesteps=3).eval()
    last = model.out_layer[4]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.arange(6, dtype=torch.float32))
        pred = model(torch.randn(1, 16, 16, 3, 2)).pred
    expected = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    assert torch.equal(pred[0, 5, 7], expected)


def test_normalisation_makes_the_model_affine_equivariant():
    """With the statistics' feature maps fixed (scale 1, shift 0), pred(a x + c) = a pred(x) + c."""
    torch.manual_seed(0)
    model = build_model("dpot", **TINY, normalize=True).eval()
    with torch.no_grad():
        for layer, bias in ((model.scale_feats_mu, 0.0), (model.scale_feats_sigma, 1.0)):
            layer.weight.zero_()
            layer.bias.fill_(bias)
        x = torch.randn(2, 16, 16, 3, 2)
        a = torch.tensor([3.0, 0.25]).reshape(2, 1, 1, 1, 1)
        c = torch.tensor([[5.0, -1.0], [0.5, 2.0]]).reshape(2, 1, 1, 1, 2)
        base = model(x).pred
        moved = model(a * x + c).pred
    assert torch.allclose(moved, a * base + c, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("time_agg", ["exp_mlp", "mlp"])
def test_folded_embedding_equals_the_original_order(time_agg):
    """embed() folds the last patch conv and pos_embed into the time weights; compare with
    patch-embedding every frame, adding pos_embed, then aggregating over time."""
    torch.manual_seed(0)
    model = build_model("dpot", **{**TINY, "img_size": (16, 12)}, time_agg=time_agg)
    with torch.no_grad():
        model.pos_embed.normal_()
    x = torch.randn(2, 16, 12, 3, 5)  # C + 3 coordinate channels
    frames = x.permute(0, 3, 4, 1, 2).reshape(6, 5, 16, 12)
    latent = model.patch_embed(frames) + model.pos_embed  # [(B T), D, 4, 3]
    latent = latent.reshape(2, 3, 16, 4, 3).permute(0, 3, 4, 1, 2)  # [B, X', Y', T, D]
    expected = model.time_agg_layer(latent).permute(0, 3, 1, 2)
    ours = model.embed(x)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6)
    g1 = torch.autograd.grad(ours.square().sum(), [model.pos_embed, model.time_agg_layer.w])
    g2 = torch.autograd.grad(expected.square().sum(), [model.pos_embed, model.time_agg_layer.w])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("act", ["gelu", "tanh"])
def test_pixelwise_decoder_equals_the_convolutions(act):
    """decode() against ``out_layer`` itself (transposed conv, 1x1 convs), values and gradients,
    on a rectangular latent grid."""
    torch.manual_seed(0)
    model = build_model("dpot", **{**TINY, "img_size": (16, 12)}, out_timesteps=2, act=act)
    with torch.no_grad():
        for module in model.out_layer:
            if getattr(module, "bias", None) is not None:
                module.bias.normal_()  # the default init leaves a bias layout error invisible
    latent = torch.randn(2, 16, 4, 3, requires_grad=True)
    ours = model.decode(latent)
    expected = model.out_layer(latent).permute(0, 2, 3, 1)
    assert ours.shape == (2, 16, 12, 4)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(ours)
    params = [latent, *model.out_layer.parameters()]
    for a, b in zip(torch.autograd.grad((ours * weights).sum(), params),
                    torch.autograd.grad((expected * weights).sum(), params)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)

"""The shared trunk: decoder layout and instance normalisation, checked analytically."""

from __future__ import annotations

import pytest
import torch

from moepot import build_model

from .conftest import rel_err

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


def instance_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """architecture.md step 1, written out in float64: per sample and channel, the mean over X, Y,
    T and sqrt(sum of squared deviations / (N - 1)) + 1e-6. x: [B, X, Y, T, C] -> two [B, C]."""
    flat = x.double().flatten(1, 3)  # [B, N, C]
    mu = flat.sum(dim=1) / flat.shape[1]
    sigma = (((flat - mu[:, None]) ** 2).sum(dim=1) / (flat.shape[1] - 1)).sqrt() + 1e-6
    return mu, sigma


def normalisation_inputs() -> torch.Tensor:
    """[2, 16, 16, 3, 2] with shifted and scaled channels, one of them constant (sigma = 1e-6)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, 3, 2, generator=g) * torch.tensor([0.5, 4.0]) + torch.tensor([2.0, -1.0])
    x[0, ..., 1] = 3.0
    return x


def test_normalisation_statistics_are_the_mean_and_unbiased_std_plus_eps(monkeypatch):
    """What the trunk feeds to scale_feats_* ([mu, sigma] per channel) and to the embedding
    ((x - mu) / sigma), against the formula of architecture.md."""
    model = build_model("dpot", **TINY, normalize=True).eval()
    seen: dict[str, torch.Tensor] = {}
    embed = model.embed

    def record_stats(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen["stats"] = args[0]

    def recording_embed(x: torch.Tensor, **kwargs) -> torch.Tensor:
        seen["normalised"] = x
        return embed(x, **kwargs)

    monkeypatch.setattr(model, "embed", recording_embed)
    model.scale_feats_mu.register_forward_pre_hook(record_stats)
    x = normalisation_inputs()
    with torch.no_grad():
        model(x)
    mu, sigma = instance_statistics(x)
    assert sigma[0, 1] == 1e-6  # the constant channel: std 0, plus the epsilon
    torch.testing.assert_close(seen["stats"].double(), torch.cat([mu, sigma], dim=1), rtol=1e-6, atol=1e-9)
    expected = (x.double() - mu[:, None, None, None]) / sigma[:, None, None, None]
    torch.testing.assert_close(seen["normalised"].double(), expected, rtol=1e-5, atol=1e-5)


def test_normalised_forward_is_the_plain_trunk_between_normalisation_and_its_inverse(monkeypatch):
    """Steps 1, 5 and 9 around a normalize=False model with the same weights: pred =
    plain((x - mu) / sigma) * sigma + mu, where plain's latent is scaled by
    scale_feats_sigma([mu, sigma]) and shifted by scale_feats_mu([mu, sigma]) (per channel)."""
    torch.manual_seed(0)
    model = build_model("dpot", **TINY, normalize=True).eval()
    plain = build_model("dpot", **TINY).eval()
    with torch.no_grad():
        for layer, centre in ((model.scale_feats_mu, 0.0), (model.scale_feats_sigma, 1.0)):
            layer.weight.normal_(std=0.1)
            layer.bias.normal_(std=0.3).add_(centre)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("scale_feats")})
    x = normalisation_inputs()
    mu, sigma = (s.float()[:, None, None, None] for s in instance_statistics(x))
    stats = torch.cat([mu, sigma], dim=-1).flatten(1)
    with torch.no_grad():
        shift = model.scale_feats_mu(stats)[:, :, None, None]
        scale = model.scale_feats_sigma(stats)[:, :, None, None]
        embed = plain.embed
        monkeypatch.setattr(plain, "embed", lambda z, **kw: scale * embed(z, **kw) + shift)
        expected = plain((x - mu) / sigma).pred * sigma + mu
        pred = model(x).pred
    assert rel_err(pred, expected) < 1e-5


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

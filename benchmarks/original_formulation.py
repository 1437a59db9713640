"""The original research code's formulation of DPOT and MoE-POT, on our modules' parameters.

A second implementation of the forward pass, written from ``../shared/docs/architecture.md``
the way the original computes it (not copied from it), step by step:

- the patch embedding of every frame as convolutions on ``[B T, C + 3, X, Y]``, ``pos_embed``
  added to every frame, then the time aggregation over ``[B, X', Y', T, D]`` with the
  per-frame ``D x D`` weights;
- the AFNO mixer as an ``rfft2`` of the whole grid, four zero tensors of the full spectrum
  and eight real einsums on the kept corner, then ``irfft2``;
- every 1x1 layer as ``conv2d`` on ``[B, C, X', Y']``; the router's channel attention with
  both its average- and max-pool branches;
- all 16 routed experts run on every sample, stacked, and weighted by a gate that is zero for
  the 12 unchosen ones;
- the decoder as ``ConvTranspose2d`` and two 1x1 convolutions on the image.

:func:`original_forward` runs it on one of our ``DPOT`` / ``MoEPOT`` models, with that model's
parameters and buffers (so gradients reach the same tensors, and the MoE temperature decays as
in a forward of the model). ``tests/benchmarks`` checks it against our forward (values and
gradients); ``benchmarks/models_speed.py`` times the two against each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moepot.models.base import ModelOutput
from moepot.models.layers import AFNO2D, append_coordinates
from moepot.models.moe import MoELayer, balance_loss
from moepot.models.patch_operator import PatchOperator


def afno_original_way(layer: AFNO2D, h: torch.Tensor) -> torch.Tensor:
    """The original's AFNO: four zero tensors, eight real einsums on the kept corner.

    h: [B, D, X, Y] -> [B, D, X, Y].
    """
    x = h.permute(0, 2, 3, 1)
    b, nx, ny, c = x.shape
    x_orig = x
    x = torch.fft.rfft2(x, dim=(1, 2), norm="ortho").reshape(
        b, nx, ny // 2 + 1, layer.n_blocks, layer.block_size
    )
    o1_real = torch.zeros(x.shape, device=x.device)
    o1_imag = torch.zeros(x.shape, device=x.device)
    o2_real = torch.zeros(x.shape, device=x.device)
    o2_imag = torch.zeros(x.shape, device=x.device)
    m = layer.modes
    w1, b1, w2, b2 = layer.w1, layer.b1, layer.w2, layer.b2
    mix = "...bi,bio->...bo"
    xr, xi = x[:, :m, :m].real, x[:, :m, :m].imag
    o1_real[:, :m, :m] = layer.act(torch.einsum(mix, xr, w1[0]) - torch.einsum(mix, xi, w1[1]) + b1[0])
    o1_imag[:, :m, :m] = layer.act(torch.einsum(mix, xi, w1[0]) + torch.einsum(mix, xr, w1[1]) + b1[1])
    o2_real[:, :m, :m] = (
        torch.einsum(mix, o1_real[:, :m, :m], w2[0]) - torch.einsum(mix, o1_imag[:, :m, :m], w2[1]) + b2[0]
    )
    o2_imag[:, :m, :m] = (
        torch.einsum(mix, o1_imag[:, :m, :m], w2[0]) + torch.einsum(mix, o1_real[:, :m, :m], w2[1]) + b2[1]
    )
    x = torch.view_as_complex(torch.stack([o2_real, o2_imag], dim=-1)).reshape(b, nx, ny // 2 + 1, c)
    x = torch.fft.irfft2(x, s=(nx, ny), dim=(1, 2), norm="ortho")
    return (x + x_orig).permute(0, 3, 1, 2)


def _router_original_way(layer: MoELayer, pooled: torch.Tensor) -> torch.Tensor:
    """The gate network on the pooled features [B, Hm, 1, 1] -> scores [B, E], as convolutions;
    the channel attention computes both pooling branches. (Each expert's ``conv`` is its
    1x1 Conv2d + GELU, run on [B, C, X', Y'].)"""
    z = pooled
    for module in layer.gating.gate:
        if hasattr(module, "fc"):  # channel attention: z * sigmoid(fc(avgpool z) + fc(maxpool z))
            avg = module.fc(F.adaptive_avg_pool2d(z, 1))
            peak = module.fc(F.adaptive_max_pool2d(z, 1))
            z = z * torch.sigmoid(avg + peak)
        else:
            z = module(z)
    return z.flatten(1)


def moe_original_way(layer: MoELayer, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MoE layer as the original computes it: every routed expert on every sample.

    h: [B, D, X', Y'] -> (out [B, D, X', Y'], balance loss). Reads and, after a training-mode
    forward, decays ``layer.temperature`` exactly as :class:`MoELayer` does.
    """
    features = layer.feature_extractor.conv(h)  # [B, Hm, X', Y']
    shared = torch.stack([e.conv(features) for e in layer.shared_experts]).mean(dim=0)
    scores = _router_original_way(layer, features.mean(dim=(2, 3), keepdim=True))
    learning_router = layer.training and not layer.finetune
    temperature = layer.temperature.clone()
    if learning_router and layer.temperature_decay == "forward":
        layer.step_temperature()
    top_scores, indices = scores.topk(layer.top_k, dim=1)
    weights = torch.softmax(top_scores / temperature, dim=1)
    # [B, E], zero for the unchosen; in the weights' dtype (float32 under CUDA autocast, whose softmax is)
    gates = torch.zeros_like(scores, dtype=weights.dtype).scatter(1, indices, weights)
    expert_outputs = torch.stack([e.conv(features) for e in layer.experts], dim=1)  # [B, E, D, X', Y']
    routed = (gates[:, :, None, None, None] * expert_outputs).sum(dim=1)
    aux = balance_loss(indices, weights, layer.num_experts) if learning_router else h.new_zeros(())
    return shared + routed, aux


def original_forward(model: PatchOperator, x: torch.Tensor) -> ModelOutput:
    """``model``'s forward (a DPOT or MoE-POT) in the original's formulation.

    x: [B, X, Y, T_in, C] -> ModelOutput(pred [B, X, Y, T_out, C_out], cls [B, n_cls], aux).
    """
    cfg = model.config
    b, nx, ny, nt, _ = x.shape
    if cfg.normalize:
        mu = x.mean(dim=(1, 2, 3), keepdim=True)
        sigma = x.std(dim=(1, 2, 3), keepdim=True) + 1e-6
        x = (x - mu) / sigma
        stats = torch.cat([mu, sigma], dim=-1).reshape(b, -1)
        scale_mu = model.scale_feats_mu(stats)[:, :, None, None]
        scale_sigma = model.scale_feats_sigma(stats)[:, :, None, None]

    x = append_coordinates(x)  # [B, X, Y, T, C + 3]
    frames = x.permute(0, 3, 4, 1, 2).reshape(b * nt, -1, nx, ny)  # [(B T), C + 3, X, Y]
    latent = model.patch_embed(frames) + model.pos_embed  # [(B T), D, X', Y']
    d, lx, ly = latent.shape[1:]
    latent = latent.reshape(b, nt, d, lx, ly).permute(0, 3, 4, 1, 2)  # [B, X', Y', T, D]
    latent = model.time_agg_layer(latent).permute(0, 3, 1, 2)  # per-frame [D, D] weights -> [B, D, X', Y']
    if cfg.normalize:
        latent = scale_sigma * latent + scale_mu

    aux_loss = latent.new_zeros(())
    for block in model.blocks:
        h = block.norm2(afno_original_way(block.filter, block.norm1(latent)))
        if hasattr(block, "MoE"):
            h, aux = moe_original_way(block.MoE, h)
            aux_loss = aux_loss + aux
        else:
            h = block.mlp(h)
        latent = h + latent

    cls_logits = model.cls_head(latent.mean(dim=(2, 3)))
    pred = model.out_layer(latent).permute(0, 2, 3, 1).reshape(b, nx, ny, cfg.out_timesteps, cfg.out_channels)
    if cfg.normalize:
        pred = pred * sigma + mu
    return ModelOutput(pred, cls_logits, aux_loss)

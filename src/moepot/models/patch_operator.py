"""The trunk shared by DPOT and MoE-POT: embed, aggregate time, mix, decode.

Forward for ``x: [B, X, Y, T, C]`` (architecture.md, "Forward pass"):

1. optional instance normalisation (mean and unbiased std over X, Y, T per sample and
   channel, + 1e-6), whose 2C statistics also feed ``scale_feats_mu`` / ``scale_feats_sigma``;
2. three coordinate channels (x, y, t in [0, 1]);
3. patch embedding of every frame, plus ``pos_embed``;
4. time aggregation of the T frames into one latent [B, D, X/p, Y/p] (3 and 4 are computed
   in a cheaper, equivalent order: see :meth:`PatchOperator.embed`);
5. if normalising: x <- scale_sigma * x + scale_mu;
6. ``depth`` blocks (subclasses decide the channel mixer);
7. class logits from the spatial mean of the latent;
8. decoder back to [B, X, Y, T_out, C] (flat channel index t * C + c);
9. if normalising: pred <- pred * sigma + mu.
"""

from __future__ import annotations

import torch
from torch import nn

from moepot.models.base import ModelOutput, NeuralOperator
from moepot.models.config import ModelConfig
from moepot.models.layers import PatchEmbed, TimeAggregator, activation, append_coordinates


class PatchOperator(NeuralOperator):
    """DPOT-style patch operator; subclasses implement :meth:`make_block`.

    A block maps ``[B, D, X', Y'] -> ([B, D, X', Y'], aux_loss scalar or None)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        cfg = config
        d, p = cfg.embed_dim, cfg.patch_size
        lx, ly = (side // p for side in cfg.grid)
        if cfg.normalize:
            self.scale_feats_mu = nn.Linear(2 * cfg.in_channels, d)
            self.scale_feats_sigma = nn.Linear(2 * cfg.in_channels, d)
        self.patch_embed = PatchEmbed(p, cfg.in_channels + 3, cfg.out_channels * p + 3, d, cfg.act)
        self.pos_embed = nn.Parameter(torch.zeros(1, d, lx, ly))
        self.time_agg_layer = TimeAggregator(cfg.in_timesteps, d, cfg.time_agg)
        self.blocks = nn.ModuleList(self.make_block(cfg) for _ in range(cfg.depth))
        self.cls_head = nn.Sequential(
            nn.Linear(d, d),
            activation(cfg.act),
            nn.Linear(d, d),
            activation(cfg.act),
            nn.Linear(d, cfg.n_cls),
        )
        self.out_layer = nn.Sequential(
            nn.ConvTranspose2d(d, cfg.out_layer_dim, kernel_size=p, stride=p),
            activation(cfg.act),
            nn.Conv2d(cfg.out_layer_dim, cfg.out_layer_dim, kernel_size=1),
            activation(cfg.act),
            nn.Conv2d(cfg.out_layer_dim, cfg.out_channels * cfg.out_timesteps, kernel_size=1),
        )
        self._init_weights()

    def make_block(self, config: ModelConfig) -> nn.Module:
        raise NotImplementedError

    def _init_weights(self) -> None:
        """The original's initialisation: truncated normal (std 0.02) for Linear and pos_embed."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def embed(self, x: torch.Tensor, coordinates: bool = False) -> torch.Tensor:
        """Patch-embed every frame, add ``pos_embed``, aggregate the frames over time.

        x: [B, X, Y, T, C+3] (the last three channels the coordinates), or with
        ``coordinates=True`` x: [B, X, Y, T, C] and the linspace coordinates of
        :func:`append_coordinates` are implied -> [B, D, X', Y'] (a channels-last view).

        Mathematically ``time_agg(patch_embed(frame_t) + pos_embed)``; but the patch embedding
        ends in a linear 1x1 conv (H -> D, H = out_channels * p + 3) and the time aggregation
        is linear too, so we fold the conv and ``pos_embed`` into the per-frame time weights and
        contract the H-wide features directly: T*H*D instead of T*D*D multiply-adds per latent
        cell (about 15x fewer for the published sizes). The first (p x p, stride p) convolution
        is one matmul over the patches, channels last; with ``coordinates=True`` the coordinate
        channels' share of it is computed once on the grid and broadcast over the batch. The
        result equals the original order of operations to float rounding.
        """
        proj_in, act, proj_out = self.patch_embed.proj
        if coordinates:
            c = x.shape[-1]
            grid = append_coordinates(x[:1, ..., :0])  # [1, X, Y, T, 3]
            grid_part = _patch_conv(grid, proj_in.weight[:, c:]) + proj_in.bias  # [1, X', Y', T, H]
            pre = _patch_conv(x, proj_in.weight[:, :c]) + grid_part
        else:
            pre = _patch_conv(x, proj_in.weight) + proj_in.bias
        feats = act(pre)  # [B, X', Y', T, H]
        b, lx, ly, nt, h = feats.shape
        time_agg = self.time_agg_layer
        folded = time_agg.per_frame(proj_out.weight.flatten(1).t())  # [T, H, D]
        offset = (self.pos_embed[0] + proj_out.bias[:, None, None]).permute(1, 2, 0)  # [X', Y', D]
        offset = offset @ time_agg.summed_weights()
        latent = feats.reshape(b, lx, ly, nt * h) @ folded.reshape(nt * h, -1) + offset  # [B, X', Y', D]
        return latent.permute(0, 3, 1, 2)  # channels-last memory: the blocks work channels last

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``out_layer`` (transposed p x p conv, act, 1x1 conv, act, 1x1 conv), pixel by pixel.

        latent: [B, D, X', Y'] -> [B, X' p, Y' p, O] channels last (O = T_out * C, flat index
        t * C + c), equal to ``out_layer(latent).permute(0, 2, 3, 1)`` to float rounding.

        The transposed convolution has kernel = stride = p, so every latent cell expands on
        its own into a p x p patch: one matmul [B X' Y', D] @ [D, (p p W)] whose columns are
        ordered (px, py, w) gives every pixel's W features contiguously, and the two 1x1
        convolutions are then plain matmuls over pixels. Only the O-wide result is rearranged
        into the image, not the W-wide features (the convolution's way permutes 8x more data).
        """
        upsample, act1, mix, act2, project = self.out_layer
        b, d, lx, ly = latent.shape
        _, width, p, _ = upsample.weight.shape  # [D, W, p, p]
        kernel = upsample.weight.permute(0, 2, 3, 1).reshape(d, p * p * width)  # columns (px, py, w)
        tokens = latent.permute(0, 2, 3, 1).reshape(b * lx * ly, d)
        pixels = act1(torch.addmm(upsample.bias.repeat(p * p), tokens, kernel).reshape(-1, width))
        pixels = act2(torch.addmm(mix.bias, pixels, mix.weight.flatten(1).t()))  # [(B X' Y' p p), W]
        out = torch.addmm(project.bias, pixels, project.weight.flatten(1).t())  # [(B X' Y' p p), O]
        out = out.reshape(b, lx, ly, p, p, -1).permute(0, 1, 3, 2, 4, 5)  # [B, X', px, Y', py, O]
        return out.reshape(b, lx * p, ly * p, -1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """x: [B, X, Y, T_in, C] -> ModelOutput(pred [B, X, Y, T_out, C_out], cls [B, n_cls], aux)."""
        cfg = self.config
        self.check_input(x, cfg.grid)
        b, nx, ny, nt, _ = x.shape

        if cfg.normalize:
            mu = x.mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1, C]
            sigma = x.std(dim=(1, 2, 3), keepdim=True) + 1e-6
            x = (x - mu) / sigma
            stats = torch.cat([mu, sigma], dim=-1).reshape(b, -1)  # [B, 2C]
            scale_mu = self.scale_feats_mu(stats)[:, :, None, None]  # [B, D, 1, 1]
            scale_sigma = self.scale_feats_sigma(stats)[:, :, None, None]

        latent = self.embed(x, coordinates=True)  # [B, D, X', Y']
        if cfg.normalize:
            latent = scale_sigma * latent + scale_mu

        aux_loss = latent.new_zeros(())
        for block in self.blocks:
            latent, aux = block(latent)
            if aux is not None:
                aux_loss = aux_loss + aux

        cls_logits = self.cls_head(latent.mean(dim=(2, 3)))
        pred = self.decode(latent).reshape(b, nx, ny, cfg.out_timesteps, cfg.out_channels)
        if cfg.normalize:
            pred = pred * sigma + mu
        return ModelOutput(pred, cls_logits, aux_loss)


def _patch_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A p x p, stride p convolution (no bias) of every frame, as one matmul, channels last.

    x: [B, X, Y, T, C], weight: [H, C, p, p] -> [B, X/p, Y/p, T, H].
    """
    b, nx, ny, nt, nc = x.shape
    p = weight.shape[-1]
    lx, ly = nx // p, ny // p
    patches = x[:, : lx * p, : ly * p].reshape(b, lx, p, ly, p, nt, nc).permute(0, 1, 3, 5, 2, 4, 6)
    patches = patches.reshape(b * lx * ly * nt, p * p * nc)  # [(B X' Y' T), (p p C)]
    kernel = weight.permute(2, 3, 1, 0).reshape(p * p * nc, -1)  # [(p p C), H]
    return (patches @ kernel).reshape(b, lx, ly, nt, -1)

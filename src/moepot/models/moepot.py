"""MoE-POT (NeurIPS 2025): the patch operator with an image-level MoE in every block."""

from __future__ import annotations

import torch
from torch import nn

from moepot.models.config import ModelConfig
from moepot.models.layers import AFNO2D
from moepot.models.moe import MoELayer
from moepot.models.patch_operator import PatchOperator


class MoEBlock(nn.Module):
    """r = x; h, aux = MoE(norm2(AFNO(norm1(x)))); out = h + r.

    Keys: ``norm1``, ``filter``, ``norm2``, ``MoE.*`` (see :mod:`moepot.models.moe`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.norm1 = nn.GroupNorm(8, d)
        self.filter = AFNO2D(d, config.n_blocks, config.modes, config.act)
        self.norm2 = nn.GroupNorm(8, d)
        self.MoE = MoELayer(
            d,
            config.hidden_dim,
            num_experts=config.num_experts,
            num_shared=config.num_shared_experts,
            top_k=config.top_k,
            dispatch=config.expert_dispatch,
            temperature_decay=config.temperature_decay,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, D, X', Y'] -> ([B, D, X', Y'], balance loss scalar)."""
        h, aux = self.MoE(self.norm2(self.filter(self.norm1(x))))
        return h + x, aux


class MoEPOT(PatchOperator):
    """MoE-POT; ``aux_loss`` is the balance loss summed over the blocks (0 in eval)."""

    def make_block(self, config: ModelConfig) -> nn.Module:
        return MoEBlock(config)

"""DPOT (Hao et al., ICML 2024): the patch operator with a dense channel MLP in every block."""

from __future__ import annotations

import torch
from torch import nn

from moepot.models.config import ModelConfig
from moepot.models.layers import AFNO2D, activation, conv1x1
from moepot.models.patch_operator import PatchOperator


class DPOTBlock(nn.Module):
    """r = x; h = mlp(norm2(AFNO(norm1(x)))); out = h + r (no double skip).

    Keys: ``norm1``, ``filter``, ``norm2``, ``mlp.0`` (1x1 D->Hm), ``mlp.2`` (1x1 Hm->D).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, hidden = config.embed_dim, config.hidden_dim
        self.norm1 = nn.GroupNorm(8, d)
        self.filter = AFNO2D(d, config.n_blocks, config.modes, config.act)
        self.norm2 = nn.GroupNorm(8, d)
        self.mlp = nn.Sequential(
            nn.Conv2d(d, hidden, kernel_size=1), activation(config.act), nn.Conv2d(hidden, d, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """x: [B, D, X', Y'] -> ([B, D, X', Y'], None)."""
        h = self.norm2(self.filter(self.norm1(x)))
        h = conv1x1(self.mlp[1](conv1x1(h, self.mlp[0])), self.mlp[2])  # = self.mlp(h), faster
        return h + x, None


class DPOT(PatchOperator):
    """DPOT; ``aux_loss`` is always 0."""

    def make_block(self, config: ModelConfig) -> nn.Module:
        return DPOTBlock(config)

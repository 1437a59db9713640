"""The original's relative L2 error (``SimpleLpLoss`` of MoE-POT/DPOT), per sample.

For every sample and channel: ``‖mask·(pred − target)‖₂ / (‖mask·target‖₂ + 1e-8)`` over all grid
points and time steps, then the mean over the channels the mask keeps (a channel is kept when
its mask has any non-zero entry). Without a mask every channel counts. The training loss is the
sum of this over the batch; the evaluation metrics are its means. :func:`format_error` is how
``moepot evaluate`` and the training log print them.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-8  # added to the target norm, as in the original


def relative_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Relative L2 error of each sample, averaged over the kept channels.

    Args:
        pred: ``[B, X, Y, T, C]`` (any number of axes between B and C).
        target: same shape as ``pred``.
        mask: broadcastable to ``pred``, typically ``[B, X, Y, 1, C]``; 1 on the points and
            channels that count, 0 elsewhere. ``None`` counts everything.

    Returns:
        ``[B]``: per-sample error.
    """
    if pred.shape != target.shape:
        raise ValueError(f"relative_l2: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    batch, channels = pred.shape[0], pred.shape[-1]
    if mask is not None:
        pred = pred * mask
        target = target * mask
        # channels with any kept point, per sample (the original sums over all but B and C)
        per_channel = mask.sum(dim=tuple(range(1, mask.ndim - 1))).reshape(mask.shape[0], -1)
        kept_channels = per_channel.count_nonzero(dim=-1).to(pred.dtype).expand(batch)
    else:
        kept_channels = torch.full((batch,), float(channels), dtype=pred.dtype, device=pred.device)
    diff_norm = torch.linalg.vector_norm((pred - target).reshape(batch, -1, channels), dim=1)  # [B, C]
    target_norm = torch.linalg.vector_norm(target.reshape(batch, -1, channels), dim=1) + EPS  # [B, C]
    return (diff_norm / target_norm).sum(dim=-1) / kept_channels


def format_error(value: float) -> str:
    """An error as printed by ``moepot evaluate`` and the training log: at least 4 significant digits.

    Five decimals from 0.01 up (``0.99995``, where ``%.4g`` shows ``1``), scientific notation with
    4 significant digits below (``1.235e-04``); NaN and infinity as ``nan`` / ``inf``.
    """
    value = float(value)
    if math.isfinite(value) and value != 0 and abs(value) < 0.01:
        return f"{value:.3e}"
    return f"{value:.5f}"

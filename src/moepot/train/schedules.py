"""Learning-rate schedules of the original, stepped once per optimizer step (per batch).

``lr_method``:

- ``cycle``: one-cycle (``torch.optim.lr_scheduler.OneCycleLR``) with the original's factors:
  start and end at ``lr / 1e4`` and ``lr / 1e8``, peak ``lr`` after the fraction
  ``warmup_epochs / epochs`` of the run. Like the original it also cycles Adam's beta1
  between 0.95 and 0.85 (OneCycleLR's default momentum cycling).
- ``step``: ``lr * step_gamma`` every ``step_size`` epochs.
- ``warmup``: linear warm-up over ``warmup_epochs``, then inverse square-root decay.
- ``linear``: linear decay from ``lr`` to 0 over the run.
- ``restart``: cosine annealing with warm restarts every ``step_size`` epochs.
- ``cyclic``: triangular2 cycles between 1e-5 and ``lr`` with half-period ``step_size`` epochs.
- ``cos``: cosine annealing from ``lr`` to 1e-6 over the run (ours: the original has no such schedule).

The scheduler classes are torch's, so their ``state_dict`` loads with ``weights_only=True`` and
a resumed run continues the exact learning-rate sequence.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    StepLR,
)

from moepot.errors import ConfigError

SCHEDULES = ("cycle", "step", "warmup", "linear", "restart", "cyclic", "cos")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    method: str,
    lr: float,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    epochs: int = 1,
    step_size: int = 100,
    step_gamma: float = 0.5,
) -> LRScheduler:
    """A per-batch schedule for ``optimizer`` over ``total_steps`` optimizer steps.

    Raises:
        ConfigError: unknown ``method`` or a length that cannot be scheduled.
    """
    if total_steps < 1 or steps_per_epoch < 1:
        raise ConfigError(
            f"schedule: the run has {total_steps} steps ({steps_per_epoch} per epoch); expected at least 1"
        )
    key = method.lower()
    if key == "cycle":
        # the original's pct_start = warmup_epochs / epochs; OneCycleLR needs each phase to span
        # more than one step, so very short runs are scheduled as if they had 4 steps
        length = max(total_steps, 4)
        pct = min(max(warmup_epochs / max(epochs, 1), 1.5 / length), 1.0 - 1.5 / length)
        return OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=length,
            pct_start=pct,
            div_factor=1e4,
            final_div_factor=1e4,
        )
    if key == "step":
        return StepLR(optimizer, step_size=max(step_size * steps_per_epoch, 1), gamma=step_gamma)
    if key == "warmup":
        warm = max(warmup_epochs * steps_per_epoch, 1)
        return LambdaLR(optimizer, lambda s: min((s + 1) / warm, math.sqrt(warm / (s + 1))))
    if key == "linear":
        return LambdaLR(optimizer, lambda s: max(1.0 - s / total_steps, 0.0))
    if key == "restart":
        return CosineAnnealingWarmRestarts(optimizer, T_0=max(step_size * steps_per_epoch, 1), eta_min=0.0)
    if key == "cyclic":
        return CyclicLR(
            optimizer,
            base_lr=min(1e-5, lr),
            max_lr=lr,
            step_size_up=max(step_size * steps_per_epoch, 1),
            mode="triangular2",
            cycle_momentum=False,
        )
    if key == "cos":
        return CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=min(1e-6, lr))
    raise ConfigError(f"lr_method: unknown schedule {method!r}; expected one of {', '.join(SCHEDULES)}")


def scale_schedule(scheduler: LRScheduler, factor: float) -> None:
    """Multiply every learning rate the schedule will produce by ``factor`` (e.g. after a
    divergence), keeping its position: the current rates and the anchors each torch schedule
    recomputes them from."""
    optimizer = scheduler.optimizer
    for group in optimizer.param_groups:
        group["lr"] *= factor
        for key in ("initial_lr", "max_lr", "min_lr"):  # OneCycleLR / all schedules' anchors
            if key in group:
                group[key] *= factor
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    if isinstance(scheduler, CyclicLR):
        scheduler.max_lrs = [lr * factor for lr in scheduler.max_lrs]
    if isinstance(scheduler, CosineAnnealingWarmRestarts | CosineAnnealingLR):
        scheduler.eta_min *= factor
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports

"""Learning-rate schedules against their closed forms; scaling and resuming keep the sequence."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pytest
import torch

from moepot.errors import ConfigError
from moepot.train.schedules import SCHEDULES, build_scheduler, scale_schedule

LR = 1e-3


def lrs(method: str, n: int, **kwargs) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=LR, betas=(0.9, 0.9))
    scheduler = build_scheduler(optimizer, method=method, lr=LR, **kwargs)
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cycle_is_the_originals_one_cycle():
    total, per_epoch, warm, epochs = 40, 4, 2, 10  # peak after 20% of the run
    got = lrs("cycle", total, total_steps=total, steps_per_epoch=per_epoch, warmup_epochs=warm, epochs=epochs)
    start, peak, end = LR / 1e4, LR, LR / 1e4 / 1e4
    up = warm / epochs * total - 1  # steps of the rising half-cosine

    def closed_form(s: int) -> float:
        if s <= up:
            return peak + (start - peak) * (1 + math.cos(math.pi * s / up)) / 2
        frac = (s - up) / (total - 1 - up)
        return end + (peak - end) * (1 + math.cos(math.pi * frac)) / 2

    assert got == pytest.approx([closed_form(s) for s in range(total)], rel=1e-9)


@pytest.mark.parametrize(
    ("method", "closed_form"),
    [
        ("step", lambda s: LR * 0.5 ** (s // 6)),  # step_size 2 epochs x 3 steps
        ("linear", lambda s: LR * (1 - s / 12)),
        ("warmup", lambda s: LR * min((s + 1) / 3, math.sqrt(3 / (s + 1)))),
        ("cos", lambda s: 1e-6 + (LR - 1e-6) * (1 + math.cos(math.pi * s / 12)) / 2),
    ],
)
def test_other_schedules_follow_their_formula(method, closed_form):
    got = lrs(method, 12, total_steps=12, steps_per_epoch=3, warmup_epochs=1, epochs=4, step_size=2, step_gamma=0.5)
    assert got == pytest.approx([closed_form(s) for s in range(12)], rel=1e-6)


def triangular2(s: int, half_period: int, low: float, high: float) -> float:
    """Smith's triangular2 cyclical rate: up and down between low and high over 2 x half_period
    steps, the amplitude halved every cycle."""
    cycle = math.floor(1 + s / (2 * half_period))
    x = abs(s / half_period - 2 * cycle + 1)
    return low + (high - low) * max(0.0, 1 - x) / 2 ** (cycle - 1)


@pytest.mark.parametrize(
    ("method", "closed_form"),
    [
        # cosine from lr to 0, restarting every step_size epochs (2 epochs x 3 steps)
        ("restart", lambda s: LR * (1 + math.cos(math.pi * (s % 6) / 6)) / 2),
        # between 1e-5 and lr, half-period step_size epochs (6 steps), amplitude halved each cycle
        ("cyclic", lambda s: triangular2(s, 6, 1e-5, LR)),
    ],
)
def test_periodic_schedules_follow_their_formula_over_several_periods(
    method: str, closed_form: Callable[[int], float]
) -> None:
    got = lrs(method, 30, total_steps=30, steps_per_epoch=3, warmup_epochs=1, epochs=10, step_size=2)
    assert got == pytest.approx([closed_form(s) for s in range(30)], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("method", SCHEDULES)
def test_scaling_halves_every_later_rate(method):
    kwargs = dict(lr=LR, total_steps=30, steps_per_epoch=3, warmup_epochs=2, epochs=10, step_size=2)
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt_a = torch.optim.Adam([params[0]], lr=LR)
    opt_b = torch.optim.Adam([params[1]], lr=LR)
    sched_a = build_scheduler(opt_a, method=method, **kwargs)
    sched_b = build_scheduler(opt_b, method=method, **kwargs)
    for step in range(25):
        if step == 7:
            scale_schedule(sched_b, 0.5)
        if step >= 7:
            assert opt_b.param_groups[0]["lr"] == pytest.approx(0.5 * opt_a.param_groups[0]["lr"], rel=1e-9)
        for opt, sched in ((opt_a, sched_a), (opt_b, sched_b)):
            opt.step()
            sched.step()


@pytest.mark.parametrize("method", SCHEDULES)
def test_resumed_schedule_continues_the_same_sequence(method):
    kwargs = dict(lr=LR, total_steps=20, steps_per_epoch=2, warmup_epochs=2, epochs=10, step_size=1)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=LR)
    sched = build_scheduler(opt, method=method, **kwargs)
    for _ in range(6):
        opt.step()
        sched.step()
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched2 = build_scheduler(opt2, method=method, **kwargs)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    for _ in range(10):
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        assert opt2.param_groups[0]["betas"] == opt.param_groups[0]["betas"]
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="lr_method.*cycle"):
        lrs("exponential", 1, total_steps=5, steps_per_epoch=1)

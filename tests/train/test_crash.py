"""Crash safety: ``moepot pretrain`` killed with SIGKILL at seeded random points, resumed with
``--resume auto``, finishes exactly like an uninterrupted run.

The kills land (1) half-way through a checkpoint write after a random step (the
``MOEPOT_TEST_CHECKPOINT_PAUSE`` hook of ``moepot.train.checkpoint`` holds the write with half of
its bytes on disk), (2) half-way through the checkpoint write that follows an evaluation (the
evaluation record is already in ``metrics.jsonl``), (3, 4) at random moments after random steps
of the second epoch. After every kill each ``*.pt`` file present must load with ``weights_only=True`` and
match its checksum; the final run must leave no partial file behind and end with the same
weights, optimizer state and evaluation records as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_data import write_decay_mixture

from moepot.train.checkpoint import PAUSE_ENV, load_checkpoint
from moepot.train.config import load_config
from moepot.train.loop import train

CONFIG = """\
name: crash
model: moepot
width: 16
n_layers: 1
n_blocks: 2
patch_size: 4
res: 16
modes: 3
out_layer_dim: 8
T_in: 4
batch_size: 4
n_test: 2
lr_method: cycle
use_writer: false
train_paths: [decay_a, decay_b]
epochs: 2              # 24 samples / batch 4: 6 steps per epoch, 12 in all
warmup_epochs: 1
noise_scale: 0.01      # exercises the checkpointed noise generator
checkpoint_every_steps: 1
eval_every_epochs: 1   # evaluations at steps 6 and 12
keep_last: 2
seed: 3
"""
TOTAL_STEPS = 12
EPOCH_STEPS = 6
SEED = 20240607
POLL_S = 0.005
DEADLINE_S = 180.0
PAUSE_S = "0.5"


@pytest.fixture()
def setup(tmp_path):
    data_root = tmp_path / "data"
    write_decay_mixture(data_root)
    config_path = tmp_path / "crash.yaml"
    config_path.write_text(CONFIG)
    return data_root, config_path


class Run:
    """One ``python -m moepot pretrain --resume auto`` process on the shared run directory."""

    def __init__(self, tmp_path: Path, data_root: Path, config_path: Path, index: int, pause: bool) -> None:
        self.run_dir = tmp_path / "run"
        self.checkpoints = self.run_dir / "checkpoints"
        self.log_path = tmp_path / f"attempt{index}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env.pop(PAUSE_ENV, None)
        if pause:
            env[PAUSE_ENV] = PAUSE_S
        command = [sys.executable, "-m", "moepot", "pretrain", "--config", str(config_path), "--data-root",
                   str(data_root), "--run-dir", str(self.run_dir), "--resume", "auto"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"training exited ({self.process.returncode}) before {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"timed out waiting for {what}:\n{self.log()}")
            time.sleep(POLL_S)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL, self.log()

    # -- what the run directory shows ----------------------------------------------------------
    def completed_step(self) -> int:
        """The newest step whose checkpoint file is complete (renamed into place)."""
        steps = [int(m.group(1)) for p in self.checkpoints.glob("step_*.pt")
                 if (m := re.fullmatch(r"step_(\d+)\.pt", p.name))]
        return max(steps, default=0)

    def writing_a_step_file(self) -> bool:
        """A step checkpoint's temporary file exists with some bytes in it."""
        for partial in self.checkpoints.glob(".step_*.pt.*.tmp"):
            try:
                if partial.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                continue
        return False

    def evaluations(self) -> int:
        path = self.run_dir / "metrics.jsonl"
        return len(path.read_text().splitlines()) if path.is_file() else 0


def assert_every_checkpoint_loads(checkpoints: Path) -> None:
    for path in sorted(checkpoints.glob("*.pt")):
        torch.load(path, map_location="cpu", weights_only=True)  # the promise to any reader
        load_checkpoint(path)  # and the checksum matches


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(setup, tmp_path):
    data_root, config_path = setup
    rng = random.Random(SEED)
    attempt = 0

    def start(pause: bool = False) -> Run:
        nonlocal attempt
        attempt += 1
        return Run(tmp_path, data_root, config_path, attempt, pause)

    # 1. half-way through a checkpoint write, after a random step of the first epoch
    run = start(pause=True)
    target = rng.randint(1, EPOCH_STEPS - 2)
    run.wait_until(lambda: run.completed_step() >= target and run.writing_a_step_file(),
                   f"a checkpoint write after step {target}")
    run.kill()
    partial = [p for p in run.checkpoints.glob(".step_*.pt.*.tmp") if p.stat().st_size > 0]
    assert partial, "the kill was meant to land mid-write"
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for half a zip file
        torch.load(partial[0], weights_only=True)
    assert_every_checkpoint_loads(run.checkpoints)
    assert load_checkpoint(run.checkpoints / "last.pt")["step"] < EPOCH_STEPS

    # 2. half-way through the checkpoint written right after the end-of-epoch evaluation
    run = start(pause=True)
    run.wait_until(lambda: run.evaluations() > 0 and run.writing_a_step_file(),
                   "the checkpoint write after an evaluation")
    run.kill()
    assert_every_checkpoint_loads(run.checkpoints)
    last = load_checkpoint(run.checkpoints / "last.pt")
    assert (last["step"], last["epoch"]) == (EPOCH_STEPS, 0)  # the evaluation's checkpoint never landed
    assert run.evaluations() == 1  # but its record did: the resumed run must not log it twice

    # 3., 4. at random moments (in a step, a write or a rename) after random steps of the second epoch
    for low, high in ((EPOCH_STEPS + 1, EPOCH_STEPS + 2), (EPOCH_STEPS + 3, TOTAL_STEPS - 1)):
        run = start()
        target = max(rng.randint(low, high), run.completed_step() + 1)
        if target >= TOTAL_STEPS:  # an earlier kill landed late (a slow machine): nothing left to interrupt
            run.process.kill()
            run.process.wait()
            break
        run.wait_until(lambda: run.completed_step() >= target, f"step {target}")  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.15))
        run.kill()
        assert_every_checkpoint_loads(run.checkpoints)

    # 5. resume to the end
    run = start()
    assert run.process.wait(timeout=DEADLINE_S) == 0, run.log()
    assert not list(run.run_dir.rglob("*.tmp")), "partial files of the killed runs were left behind"
    assert not (run.run_dir / ".lock").exists()
    assert_every_checkpoint_loads(run.checkpoints)

    # the same run without interruption, in this process (one thread, like the subprocesses)
    config = load_config(str(config_path))[0].model_copy(update={"data_root": str(data_root), "file": "pretrain"})
    whole = train(config, run_dir=tmp_path / "whole", progress=False)
    assert whole.step == TOTAL_STEPS
    expected = load_checkpoint(whole.checkpoint)
    got = load_checkpoint(run.checkpoints / "last.pt")
    for key in ("step", "epoch", "batch_in_epoch", "best_metric", "evaluations"):
        assert got[key] == expected[key], key
    assert got["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():  # MoE temperatures and BatchNorm statistics included
        torch.testing.assert_close(got["model"][key], value, rtol=0, atol=0, msg=key)
    for index, state in expected["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(got["optimizer"]["state"][index][name], value, rtol=0, atol=0)
    assert records(run.run_dir) == records(tmp_path / "whole")  # one record per evaluation, same values

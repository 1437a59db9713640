"""Checkpoints: weights_only round trip, RNG restore, rotation, atomic failure, run lock."""

from __future__ import annotations

import argparse
import errno
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from moepot.errors import CheckpointError
from moepot.train import checkpoint as ckpt
from moepot.train.checkpoint import (
    CheckpointManager,
    RunLock,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from moepot.train.schedules import build_scheduler


def small_state():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.9))
    scheduler = build_scheduler(optimizer, method="cycle", lr=1e-3, total_steps=10, steps_per_epoch=5,
                                warmup_epochs=1, epochs=2)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_is_weights_only_and_complete(tmp_path):
    model, optimizer, scheduler = small_state()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": capture_rng(), "step": 7, "config": {"lr": 1e-3}}
    path = save_checkpoint(tmp_path / "a.pt", state)
    raw = torch.load(path, weights_only=True)  # the promise: no arbitrary unpickling needed
    assert raw["step"] == 7 and raw["config"] == {"lr": 1e-3}
    loaded = load_checkpoint(path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded["model"][key], value)
    fresh_model, fresh_opt, fresh_sched = small_state()
    fresh_opt.load_state_dict(loaded["optimizer"])
    fresh_sched.load_state_dict(loaded["scheduler"])
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()


def test_rng_restore_replays_every_generator():
    gen = torch.Generator().manual_seed(3)
    state = capture_rng(gen)
    first = (random.random(), np.random.rand(), torch.rand(2), torch.randn(2, generator=gen))
    restore_rng(state, gen)
    second = (random.random(), np.random.rand(), torch.rand(2), torch.randn(2, generator=gen))
    assert first[0] == second[0] and first[1] == second[1]
    torch.testing.assert_close(first[2], second[2])
    torch.testing.assert_close(first[3], second[3])


def test_manager_keeps_last_k_and_aliases(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in range(1, 5):
        manager.save({"step": step}, step=step, is_best=step == 2)
    assert [p.name for p in manager.step_files()] == ["step_00000003.pt", "step_00000004.pt"]
    assert load_checkpoint(manager.last)["step"] == 4
    assert load_checkpoint(manager.best)["step"] == 2  # survives the rotation of its step file
    assert manager.resolve_resume("auto") == manager.last
    assert CheckpointManager(tmp_path / "empty").resolve_resume("auto") is None
    with pytest.raises(CheckpointError, match="does not exist"):
        manager.resolve_resume(tmp_path / "nope.pt")


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save({"step": 1}, step=1)

    def disk_full(obj, path):
        with open(path, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*intact"):
        manager.save({"step": 2}, step=2)
    monkeypatch.undo()
    assert load_checkpoint(manager.last)["step"] == 1
    assert sorted(p.name for p in manager.dir.iterdir()) == ["last.pt", "step_00000001.pt"]  # no temp files


def test_foreign_and_unsafe_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    with pytest.raises(CheckpointError, match="not a moepot training checkpoint"):
        load_checkpoint(plain)
    pickled = tmp_path / "official.pth"
    torch.save({"args": argparse.Namespace(lr=1), "model": {}}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(pickled)


HOLD_LOCK = """
import sys, time
from moepot.train.checkpoint import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""

RACE_FOR_LOCK = """
import sys, time
from moepot.errors import CheckpointError
from moepot.train.checkpoint import RunLock
start = float(sys.argv[2])
while time.time() < start:
    pass
try:
    RunLock(sys.argv[1]).acquire()
except CheckpointError:
    print("refused", flush=True)
else:
    print("won", flush=True)
    time.sleep(2)
"""


def test_run_lock_refuses_a_second_run_and_takes_over_stale_locks(tmp_path):
    with RunLock(tmp_path), pytest.raises(CheckpointError, match="in use by another run"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / ".lock").write_text(f"{socket.gethostname()}:{int(dead.stdout)}")
    lock = RunLock(tmp_path).acquire()  # the owner is gone
    assert (tmp_path / ".lock").read_text().endswith(f":{os.getpid()}")
    lock.release()


def test_run_lock_of_a_killed_process_is_released_by_the_kernel(tmp_path):
    """A live holder in another process is named in the refusal; SIGKILL it (no clean-up runs)
    and its lock file stays behind, but the lock is free."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=f":{holder.pid}\\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".lock").read_text().endswith(f":{holder.pid}")
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().endswith(f":{os.getpid()}")


def test_runs_racing_for_a_stale_lock_get_it_once(tmp_path):
    """Four processes find the same stale lock file and try to take it at the same instant."""
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(f"{socket.gethostname()}:{int(dead.stdout)}")
    start = f"{time.time() + 1.5:.3f}"
    racers = [subprocess.Popen([sys.executable, "-c", RACE_FOR_LOCK, str(tmp_path), start],
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert outcomes == ["refused", "refused", "refused", "won"]




def test_resume_and_the_commands_read_the_same_checkpoint_of_a_run_directory(tmp_path):
    """--resume RUN_DIR and checkpoint_of (info, evaluate, route) are one rule: checkpoints/last.pt;
    a directory without it is named with the file it lacks."""
    manager = CheckpointManager(tmp_path / "run")
    manager.save({"model": {}, "step": 1}, step=1)
    assert manager.resolve_resume(tmp_path / "run") == CheckpointManager.checkpoint_of(tmp_path / "run") == manager.last
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"^--resume: .*empty is a directory but not a run directory.*last\.pt"):
        manager.resolve_resume(tmp_path / "empty")


def test_run_lock_is_released_when_the_run_fails_and_leaves_no_open_file(tmp_path):
    lock = RunLock(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), lock:
        raise RuntimeError("boom")
    assert not lock.held and not (tmp_path / ".lock").exists()
    with RunLock(tmp_path) as again:  # the same process takes it again: nothing holds the flock
        fd = again._fd
    with pytest.raises(OSError):  # release closed the descriptor it locked
        os.fstat(fd)

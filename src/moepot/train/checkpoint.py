"""Training checkpoints: atomic, ``weights_only``-loadable, keep the last K and the best.

A checkpoint is one ``torch.save`` file of plain containers and tensors only::

    {"format": "moepot-train-checkpoint", "version": 2,
     "model": state_dict (of the unwrapped model, MoE temperatures included as buffers),
     "model_config": dict, "optimizer": ..., "scheduler": ..., "rng": {...},
     "step": int, "epoch": int, "batch_in_epoch": int, "best_metric": float,
     "config": dict (the resolved TrainConfig), "extra": dict,
     "checksum": "sha256:..." (of everything else, see payload_digest)}

so ``torch.load(path, weights_only=True)`` reads it and nothing unpickles arbitrary objects.
Files are written through :func:`moepot.io.atomic_path` (temporary file + rename): a killed
process, a full disk or an unwritable directory leaves the previous checkpoint intact. The
checksum catches what torch's zip reader does not: a damaged byte inside tensor data.

Test hook (off by default): with ``MOEPOT_TEST_CHECKPOINT_PAUSE=<seconds>`` in the environment,
every checkpoint write stops for that long with half of its bytes on disk, so that a test can
kill the process in the middle of a write (``tests/train/test_crash.py``).

Layout inside a run directory: ``checkpoints/step_00000123.pt`` (the last ``keep_last``),
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (hard links to, or copies of, a step file).
The run directory itself is guarded by :class:`RunLock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moepot.errors import CheckpointError, OutputError
from moepot.io import atomic_path, make_dirs
from moepot.models.checkpoints import (
    CHECKSUM_KEY,
    TRAIN_CHECKPOINT_FORMAT,
    describe_load_failure,
    payload_digest,
    verify_checksum,
)

log = logging.getLogger(__name__)

FORMAT = TRAIN_CHECKPOINT_FORMAT
VERSION = 2  # 2: with a checksum; version 1 files (none) still load
PAUSE_ENV = "MOEPOT_TEST_CHECKPOINT_PAUSE"


# --------------------------------------------------------------------------- save / load
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + rename).

    Raises:
        CheckpointError: the file could not be written (disk full, directory not writable);
            any previous file at ``path`` is left as it was.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload[CHECKSUM_KEY] = payload_digest(payload)
    try:
        with atomic_path(path) as tmp:
            pause = float(os.environ.get(PAUSE_ENV) or 0)
            if pause > 0:
                _save_with_pause(payload, tmp, pause)
            else:
                torch.save(payload, tmp)
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; "
            "the previous checkpoint (if any) is intact"
        ) from exc
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, unreadable/unsafe content (truncated, not a zip, a
            pickle that needs arbitrary objects), content that does not match its checksum, or
            not a moepot training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise CheckpointError(describe_load_failure(path, exc)) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a moepot training checkpoint (no 'format': {FORMAT!r}); "
            "to start from model weights use `moepot finetune --checkpoint`"
        )
    verify_checksum(state, path)
    return state


def _save_with_pause(payload: dict[str, Any], path: Path, pause: float) -> None:
    """Test hook: write the serialised ``payload`` to ``path`` in two halves, ``pause`` seconds
    apart (see the module docstring)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        log.debug("%s: pausing %.2fs half-way through a checkpoint write (%s)", path, pause, PAUSE_ENV)
        time.sleep(pause)
        fh.write(data[len(data) // 2 :])


def remove_partial_writes(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) that :func:`moepot.io.atomic_path`
    leaves when a process is killed mid-write; call it only while holding the run's lock.

    Returns the removed paths.
    """
    removed = []
    for leftover in sorted(Path(directory).glob(".*.tmp")):
        if leftover.is_file():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed.append(leftover)
    if removed:
        log.warning("removed %d partial file(s) left by an interrupted run in %s: %s", len(removed), directory,
                    ", ".join(p.name for p in removed))
    return removed


# --------------------------------------------------------------------------- RNG state
def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Python, NumPy, torch (CPU and CUDA) and an optional extra generator's state, as tensors
    and plain lists (``weights_only``-safe)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Undo :func:`capture_rng` (the states may have been loaded onto a GPU: RNG states are set
    from CPU tensors)."""
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["key"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


def _to_plain(value: Any) -> Any:
    return [_to_plain(v) for v in value] if isinstance(value, tuple | list) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- run directory
class CheckpointManager:
    """Names, rotates and finds checkpoints in ``<run_dir>/checkpoints``."""

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 3) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(int(keep_last), 1)

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    def step_path(self, step: int) -> Path:
        return self.dir / f"step_{step:08d}.pt"

    def step_files(self) -> list[Path]:
        return sorted(self.dir.glob("step_*.pt"))

    def save(self, state: dict[str, Any], *, step: int, is_best: bool = False) -> Path:
        """Write the step file, point ``last.pt`` (and ``best.pt`` when ``is_best``) at it, and
        drop step files beyond the newest ``keep_last``."""
        path = save_checkpoint(self.step_path(step), state)
        _publish(path, self.last)
        if is_best:
            _publish(path, self.best)
        for old in self.step_files()[: -self.keep_last]:
            with contextlib.suppress(OSError):
                old.unlink()
        return path

    @staticmethod
    def checkpoint_of(source: str | os.PathLike) -> Path:
        """``source`` itself for a file; for a run directory the checkpoint it stands for, its last
        one (``checkpoints/last.pt``, the final one of a finished run), which must exist (a
        ``CheckpointError`` naming both otherwise). What ``--resume``, ``moepot info``,
        ``evaluate`` and ``route`` accept as a checkpoint."""
        path = Path(source)
        if not path.is_dir():
            return path
        checkpoint = CheckpointManager(path).last
        if not checkpoint.is_file():
            raise CheckpointError(
                f"{path} is a directory but not a run directory with a checkpoint: {checkpoint} does not exist"
            )
        log.info("%s: reading its last checkpoint %s", path, checkpoint)
        return checkpoint

    def resolve_resume(self, resume: str | os.PathLike | None) -> Path | None:
        """``"auto"`` -> ``last.pt`` if present (else None); a path -> that file."""
        if resume is None or resume == "":
            return None
        if str(resume) == "auto":
            return self.last if self.last.is_file() else None
        try:
            path = self.checkpoint_of(resume)  # a run directory: its last checkpoint
        except CheckpointError as exc:
            raise CheckpointError(f"--resume: {exc}") from None
        if not path.is_file():
            raise CheckpointError(f"--resume: checkpoint {path} does not exist")
        return path


def _publish(source: Path, target: Path) -> None:
    """Make ``target`` an atomic alias of ``source``: a hard link where possible, else a copy."""
    try:
        with atomic_path(target) as tmp:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
    except OSError as exc:
        raise CheckpointError(
            f"could not update {target}: {exc.strerror or exc}; the previous file is intact"
        ) from exc


class RunLock:
    """Refuse a second run writing into the same run directory.

    ``<run_dir>/.lock`` names its owner (``host:pid``) and is held with an exclusive ``flock``
    for the whole run. The kernel drops the lock when the owner exits, however it exits, so a
    lock file left by a killed run is simply taken over (with a warning): no guess about
    whether its owner is alive, and of two runs that find it at the same instant only one gets
    the lock. On a file system without ``flock`` the run stops with a ``CheckpointError``.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            make_dirs(self.path.parent)
        except OutputError as exc:
            raise CheckpointError(f"cannot create run directory {exc.filename}: {exc.strerror}") from exc
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CheckpointError(f"run directory {self.path.parent} is not writable: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise CheckpointError(
                    f"run directory {self.path.parent} is in use by another run ({owner or 'unknown'}); "
                    "choose another --run-dir or wait for it to finish"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise CheckpointError(f"cannot lock run directory {self.path.parent}: {exc.strerror}") from exc
            if _same_file(fd, self.path):
                break
            os.close(fd)  # a finishing run removed the file we opened: lock the one now there
        previous = _read_owner(fd)
        if previous:
            log.warning("taking over the lock of %s: its run (%s) is gone", self.path.parent, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()}".encode(), 0)
        self._fd, self.held = fd, True
        return self

    def release(self) -> None:
        if self.held and self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # while still holding the lock: see _same_file
            os.close(self._fd)
            self._fd, self.held = None, False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    return os.pread(fd, 256, 0).decode(errors="replace").strip()


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is still the file at ``path`` (not one unlinked since it was opened)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False

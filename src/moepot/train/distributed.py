"""Process-group plumbing, kept apart from the model and the loop (torchtitan style).

One training loop serves one process and N processes started by
``torchrun --nproc_per_node N -m moepot pretrain ...``: torchrun sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`init_distributed` reads them and joins the group (``nccl`` on GPUs,
``gloo`` on CPU). Without them everything below is a cheap no-op, so the loop never branches on
"am I distributed" except through :class:`DistInfo`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from moepot.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes files and shows the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the torchrun environment, or None outside it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def pick_device(device: str | None, local_rank: int = 0) -> torch.device:
    """The device for this process: ``device`` when given ("cpu", "cuda", "cuda:1", "1"),
    else ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if device:
        try:
            chosen = torch.device(f"cuda:{device}" if device.isdigit() else device)
        except RuntimeError:
            raise ConfigError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:1 or a GPU index") from None
        if chosen.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device {device!r}: this torch ({torch.__version__}) sees no CUDA GPU; use cpu")
            if chosen.index is not None and chosen.index >= torch.cuda.device_count():
                raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        return chosen
    if torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    return torch.device("cpu")


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise describe a single process.

    The backend is ``nccl`` when this rank uses a GPU and ``gloo`` on CPU. Safe to call when the
    group already exists (e.g. tests that spawn processes themselves).
    """
    env = torchrun_env()
    if env is None and not dist.is_initialized():
        return DistInfo(device=pick_device(device))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = env[2] if env else rank
    else:
        rank, world, local_rank = env  # type: ignore[misc]
    dev = pick_device(device, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        log.info("joined process group: rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (returns a new tensor; the input is left unchanged)."""
    out = values.detach().clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks."""
    return all_reduce_sum(values, info) / info.world_size


def broadcast_object(obj: object, info: DistInfo, src: int = 0) -> object:
    """Rank ``src``'s Python object on every rank (a run directory name, a decision)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: object, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(model: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm statistics, MoE temperatures) to every rank.

    DDP broadcasts them at the start of each training forward, so after the last step each rank
    holds the statistics of its own batches; an evaluation then would not be the checkpoint's
    (rank 0's) model.
    """
    if info.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=src)


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when there are several ranks.

    ``find_unused_parameters=True`` because the dataset classifier is unused when its loss weight
    is 0 (the original's default); DDP then still reduces its gradient (as zeros) on every rank.
    Experts that no sample on a rank chose need no such help: every expert dispatch gives them an
    exactly zero gradient (:mod:`moepot.models.moe`).
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP / torch.compile wrappers, for saving and MoE control."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model

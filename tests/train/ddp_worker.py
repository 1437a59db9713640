"""The per-rank entry point of test_distributed (a plain module, so spawned processes can import it)."""

from __future__ import annotations

import os

import torch

from moepot.train.config import TrainConfig


def worker(rank: int, world: int, port: int, jobs: list[dict]) -> None:
    """Run each job as one DDP training run: ``{"config", "run_dir", "finetune_from", "out"}``
    plus optional ``resume``, ``stop_after_steps``; rank 0 saves the losses, metrics and last
    checkpoint path to ``out``. A job with ``"expect_error": True`` must raise a MoepotError on
    every rank (each rank saves its message to ``out.<rank>``); the next job then starts on
    every rank together, which a rank left behind would hang. A job ``{"buffers": out}`` checks
    ``broadcast_buffers``: each rank fills a BatchNorm's statistics with its rank, then saves
    what it holds after the broadcast to ``out.<rank>``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from moepot.errors import MoepotError
    from moepot.train import distributed as dist_utils
    from moepot.train.loop import train

    try:
        for job in jobs:
            if "buffers" in job:
                info = dist_utils.init_distributed("cpu")
                norm = torch.nn.BatchNorm1d(3)
                norm.running_mean.fill_(float(rank))
                dist_utils.broadcast_buffers(norm, info)
                torch.save(norm.running_mean.clone(), f"{job['buffers']}.{rank}")
                continue
            try:
                result = train(TrainConfig.from_dict(job["config"]), run_dir=job["run_dir"],
                               finetune_from=job.get("finetune_from"), resume=job.get("resume"),
                               stop_after_steps=job.get("stop_after_steps"), device="cpu", progress=False)
            except MoepotError as exc:
                if not job.get("expect_error"):
                    raise
                torch.save(str(exc), f"{job['out']}.{rank}")
                continue
            if rank == 0:
                torch.save({"losses": result.losses, "checkpoint": str(result.checkpoint),
                            "metrics": result.metrics}, job["out"])
    finally:
        dist_utils.shutdown_distributed()

"""The per-rank entry point of test_distributed (a plain module, so spawned processes can import it)."""

from __future__ import annotations

import os

import torch

from moepot.train.config import TrainConfig


def worker(rank: int, world: int, port: int, jobs: list[dict]) -> None:
    """Run each job ``{"config", "run_dir", "finetune_from", "out"}`` as one DDP training run;
    rank 0 saves the losses, metrics and last checkpoint path to ``out``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from moepot.train.distributed import shutdown_distributed
    from moepot.train.loop import train

    try:
        for job in jobs:
            result = train(TrainConfig.from_dict(job["config"]), run_dir=job["run_dir"],
                           finetune_from=job["finetune_from"], device="cpu", progress=False)
            if rank == 0:
                torch.save({"losses": result.losses, "checkpoint": str(result.checkpoint),
                            "metrics": result.metrics}, job["out"])
    finally:
        shutdown_distributed()

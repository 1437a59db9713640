"""The process-group helpers in a single process: what they promise without a group."""

from __future__ import annotations

import pytest
import torch

from moepot.train.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    all_reduce_sum,
    torchrun_env,
)


def test_torchrun_env_reads_rank_world_and_local_rank(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert torchrun_env() is None  # not launched by torchrun
    # second node of two, 2 processes each: global rank 3 is that node's local rank 1
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == (3, 4, 1)
    monkeypatch.delenv("LOCAL_RANK")  # a launcher without LOCAL_RANK: one node, local rank = rank
    assert torchrun_env() == (3, 4, 3)


def test_only_global_rank_0_is_main():
    """Rank 0 alone writes files: on a second node the local rank 0 process must not."""
    assert DistInfo(rank=0, world_size=4, local_rank=0).is_main
    assert not DistInfo(rank=2, world_size=4, local_rank=0).is_main


def test_single_process_reductions_return_new_values():
    info = DistInfo()
    values = torch.tensor([1.0, 2.0])
    summed = all_reduce_sum(values, info)
    summed += 10  # "returns a new tensor; the input is left unchanged"
    assert torch.equal(values, torch.tensor([1.0, 2.0]))
    assert torch.equal(all_reduce_mean(values, info), values)
    assert all_gather_object({"a": 1}, info) == [{"a": 1}]  # every rank's object, in a list of one


@pytest.mark.parametrize("world", [1, 3])
def test_distinfo_is_distributed_only_with_several_ranks(world):
    assert DistInfo(world_size=world).distributed == (world > 1)

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # tiny_data helpers, shared with tests/eval
sys.path.insert(0, str(Path(__file__).parent))  # ddp_worker, imported by spawned processes


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test process: on 2 shared cores more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

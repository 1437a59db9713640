from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # tiny_data helpers, shared with tests/eval


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per test process: under ``pytest -n 2`` on 2 cores, two threads per
    worker oversubscribe the cores and tiny convolutions get tens of times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""Shared helpers of the model tests: the reference fixtures made by the original code."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def load_fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is not available")
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, weights_only=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"reference fixtures {FIXTURES} are not available")
    return FIXTURES


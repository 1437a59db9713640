"""glibc malloc tuning: freed tensor memory is reused instead of faulted in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from moepot import malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A MoE-POT-Ti sized MoE layer (the sparse path's tensor sizes change with the routing),
# repeated eval forwards; prints the minor page faults per forward after a warm-up.
FAULTS_PER_FORWARD = """
import json, resource, sys, torch
from moepot.malloc import tune_malloc
applied = tune_malloc()
from moepot.models.moe import MoELayer
torch.set_num_threads(1)
torch.manual_seed(0)
layer = MoELayer(512, 512).eval()
h = torch.randn(8, 512, 8, 8) * torch.logspace(-1, 1, 8).reshape(8, 1, 1, 1)
with torch.no_grad():
    for _ in range(3):
        layer(h)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        layer(h)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(switch: str) -> dict:
    env = {**os.environ, malloc.ENV_SWITCH: switch}
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_FORWARD], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_malloc_reuses_freed_memory():
    """With the tuning, a forward pass faults in (almost) no fresh pages: its ~4 MiB activations
    (about 1000 pages each) come from memory freed by the previous pass."""
    tuned = _faults("1")
    assert tuned["applied"] is True
    assert tuned["faults"] < 500, tuned


def test_switch_turns_it_off():
    untouched = _faults("0")
    assert untouched["applied"] is False


def test_is_idempotent():
    first = malloc.tune_malloc()
    assert malloc.tune_malloc() == first

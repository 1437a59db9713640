"""The ``moepot`` entry point (``src/moepot/cli.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_output_into_a_closed_pipe_ends_quietly():
    """``moepot data list | head -1``: the reader has gone, so writing fails with EPIPE; the
    command stops with status 141 (128 + SIGPIPE) and no traceback, not even at the exit-time flush."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader: the first write that reaches the pipe fails
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run([sys.executable, "-m", "moepot", "info", "moepot-ti", "--json"], stdout=write_end,
                              stderr=subprocess.PIPE, env=env, timeout=120, text=True)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""

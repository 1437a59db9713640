"""Keep freed memory in the process: glibc ``malloc`` settings for PyTorch on CPU.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves large blocks
(above a threshold that it adapts between 128 KiB and 32 MiB) with fresh ``mmap`` pages and
hands free memory at the top of its heap back to the kernel. A training or inference loop
allocates and frees the same few-MiB activations every step, so under the default policy it
keeps paying for new zero-filled pages: MoE-POT-Ti inference at res 64, batch 8, took ~17,000
page faults (~66 MiB of fresh pages) per forward pass, and the sparse expert path (whose
tensor sizes change from batch to batch with the routing) suffers most. PyTorch's CPU
performance-tuning guide recommends a caching allocator (jemalloc or tcmalloc via
``LD_PRELOAD``) for exactly this; glibc's own ``mallopt`` knobs give the same reuse without a
preload or an extra dependency:

- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum): blocks up to 32 MiB come from the heap and
  are reused after ``free``; setting it also stops glibc from adapting it;
- ``M_TRIM_THRESHOLD`` = 1 GiB: free memory at the top of the heap is returned to the kernel
  only beyond 1 GiB (so a process may keep up to that much freed memory resident);
- ``M_TOP_PAD`` = 64 MiB: grow the heap in large steps.

The ``moepot`` command line calls :func:`tune_malloc` once at start-up (DataLoader workers
forked later inherit it), and so do the benchmarks. Library users can call it themselves.
Set ``MOEPOT_MALLOC_TUNING=0`` to leave ``malloc`` alone. Elsewhere than glibc (macOS,
musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

ENV_SWITCH = "MOEPOT_MALLOC_TUNING"
# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
SETTINGS = {
    M_MMAP_THRESHOLD: 32 * 2**20,
    M_TRIM_THRESHOLD: 2**30,
    M_TOP_PAD: 64 * 2**20,
}

_applied = False


def tune_malloc() -> bool:
    """Apply :data:`SETTINGS` to this process's glibc ``malloc``; True if they are in effect.

    Idempotent; False (and nothing changed) on a non-glibc system, when the switch
    ``MOEPOT_MALLOC_TUNING=0`` is set, or if glibc refuses a setting.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    if not _applied:
        log.debug("glibc refused a mallopt setting; malloc keeps its defaults")
    return _applied

"""Process-wide runtime settings for CPU training (the CLI applies them; library users may call them).

glibc's allocator returns freed memory to the OS eagerly: blocks above the mmap threshold (128 KiB,
rising dynamically to at most 32 MiB) are ``mmap``-ed and ``munmap``-ed on every allocation, and the
heap top is trimmed whenever more than ``M_TRIM_THRESHOLD`` is free. PyTorch's CPU allocator has no
cache of its own, so every activation a step allocates above that size costs fresh page faults and
the kernel zeroing its pages, although the previous step freed the same block a moment ago.

For the paper's ResNet-18 at batch 256 the first-stage activations are 64 MiB each: measured on the
development machine (AMD EPYC, 2 threads, benchmarks/RESULTS.md section 4) that was 1.5 million page
faults per step and 15% of the step's CPU time in the kernel; keeping the memory in the process (below)
made the step 18-35% faster, as fast as tcmalloc, and the small demo step 10% faster
(benchmarks/malloc_ab.py).

So the CLI applies it **by default**: ``M_MMAP_MAX=0`` (large blocks come from the heap too) and
``M_TRIM_THRESHOLD`` at its maximum (freed memory stays in the process for the next step). The cost:
the process keeps its peak resident size until it exits, and glibc's heap fragments, so ResNet-18 at
batch 256 peaks at 4.25 instead of 3.63 GB (flat after the second step). ``BYOL_MALLOC=glibc`` keeps
glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_malloc", "malloc_mode"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4
_TRIM_MAX = 2**31 - 1  # mallopt takes an int
_OFF = ("glibc", "default", "off", "0")
_done: bool | None = None


def malloc_mode() -> str:
    """``"glibc"`` when ``BYOL_MALLOC`` asks for glibc's defaults, else ``"keep"`` (the default)."""
    return "glibc" if os.environ.get("BYOL_MALLOC", "").strip().lower() in _OFF else "keep"


def tune_malloc() -> bool:
    """Keep freed memory in the process (no mmap for large blocks, no trimming); True if applied.

    Applied once per process, on Linux with glibc only, unless ``BYOL_MALLOC=glibc`` (or ``default``,
    ``off``, ``0``). Call it before the first large allocation; later calls return the first answer.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if malloc_mode() == "glibc" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_MAX))
    return _done

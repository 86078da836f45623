"""Process-wide runtime settings for CPU training (the CLI applies them; library users may call them).

glibc's allocator returns freed memory to the OS eagerly: blocks above the mmap threshold are
``mmap``-ed and ``munmap``-ed on every allocation, and the heap top is trimmed whenever more than
``M_TRIM_THRESHOLD`` is free. A BYOL step on CPU allocates and frees many same-sized multi-megabyte
tensors (the views, activations, gradients), so with the defaults each step pays page faults and
zeroing for memory it had a moment ago. Raising both thresholds keeps that memory in the process.

It is **opt-in** (``BYOL_MALLOC=tuned``): alternating A/B runs on the development machine showed no
gain within noise at 2 threads or 1 thread (benchmarks/RESULTS.md, "allocator"), so the default keeps
glibc's behaviour and its smaller resident size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_done: bool | None = None


def tune_malloc(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds; True if applied (glibc only; once per process).

    Applied only when the environment has ``BYOL_MALLOC=tuned`` (opt-in: no measured gain, see the
    module docstring); otherwise the allocator is left alone and False is returned.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("BYOL_MALLOC", "").lower() != "tuned" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _done

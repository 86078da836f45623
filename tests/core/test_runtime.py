"""The allocator tuning really reaches glibc (and opts out when asked)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import ctypes, ctypes.util, sys
from byol.runtime import tune_malloc
applied = tune_malloc()
# mallinfo2 is not needed: glibc's malloc_info XML reports the thresholds' effect indirectly, so instead
# check behaviour: with the mmap threshold raised to 64 MiB, a 32 MiB block comes from the heap, whose
# top moves (sbrk), whereas with the default threshold (128 KiB, dynamic up to 32 MiB) it is mmap-ed.
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.sbrk.restype = ctypes.c_void_p
libc.malloc.restype = ctypes.c_void_p
before = libc.sbrk(0)
p = libc.malloc(48 << 20)
after = libc.sbrk(0)
libc.free(ctypes.c_void_p(p))
print(int(applied), int(after - before >= (48 << 20)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize("env, expect", [({}, "0 0"), ({"BYOL_MALLOC": "tuned"}, "1 1")])
def test_tune_malloc_moves_large_blocks_to_the_heap(env, expect):
    import os

    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env={**{k: v for k, v in os.environ.items() if k != "BYOL_MALLOC"}, **env},
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expect.split()

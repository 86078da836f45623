"""The allocator setting really reaches glibc, keeps freed memory, and opts out when asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
import ctypes, ctypes.util
from byol.runtime import malloc_mode, tune_malloc
applied = tune_malloc()
# Behaviour, not settings: with glibc's defaults a 96 MiB block is mmap-ed (the heap top, sbrk(0), does
# not move); kept in the process, it comes from the heap, and after free() the heap is not trimmed.
# The heap grows by the block less what was already free at its top, so growth is compared with half.
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_ssize_t]
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.sbrk(0)
p = libc.malloc(96 << 20)
grown = libc.sbrk(0) - before >= (48 << 20)
libc.free(p)
kept = libc.sbrk(0) - before >= (48 << 20)
print(malloc_mode(), int(applied), int(grown), int(kept), int(tune_malloc() == applied))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize("env, expect", [({}, "keep 1 1 1 1"), ({"BYOL_MALLOC": "keep"}, "keep 1 1 1 1"),
                                         ({"BYOL_MALLOC": "glibc"}, "glibc 0 0 0 1"),
                                         ({"BYOL_MALLOC": "off"}, "glibc 0 0 0 1")])
def test_tune_malloc_keeps_large_blocks_in_the_heap(env, expect):
    base = {k: v for k, v in os.environ.items() if k != "BYOL_MALLOC"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env={**base, **env}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expect.split()

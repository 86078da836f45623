"""A 100,000-file folder: the cache is built streaming, in bounded memory, and a build killed half-way
resumes without decoding the finished chunks again (slow: about 40 s on the 2-core CI machine)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

N_FILES = 100_000
#: Peak RSS growth allowed while caching N_FILES 8x8 images (measured: 64 MB on the dev machine, of which
#: the decoded pixels are 19 MB; the rest is the file list, paths and metadata). docs/reliability.md.
RSS_BOUND_MB = 128

CHILD = r"""
import sys
from byol.data import decode, load_images
calls = [0]
real = decode.decode_noted
def counting(*a):
    calls[0] += 1
    return real(*a)
decode.decode_noted = counting
def status_mb(key):  # VmHWM (peak RSS) belongs to this program's memory map; getrusage's ru_maxrss would
    with open("/proc/self/status") as f:  # also count the forking parent's RSS (it survives exec)
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
base = status_mb("VmRSS")
ds = load_images(sys.argv[1], cache_dir=sys.argv[2], progress=False, workers=1)
peak = status_mb("VmHWM")
print(len(ds), calls[0], round(peak - base), int(ds.images[:, 0, 0, 0].sum()))
"""


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> tuple[Path, int]:
    """The folder (file i holds generated image i % 256) and the sum of every image's first pixel value."""
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    blobs, firsts = [], []
    for _ in range(256):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        blobs.append(buf.getvalue())
        firsts.append(int(pixels[0, 0, 0]))
    for c in range(10):
        (root / f"c{c}").mkdir()
    for i in range(N_FILES):
        (root / f"c{i % 10}" / f"{i:06d}.png").write_bytes(blobs[i % 256])
    return root, sum(firsts[i % 256] for i in range(N_FILES))


def _child(folder: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(cache)], stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_a_100k_file_folder_caches_in_bounded_memory_and_resumes_after_a_kill(big_folder, tmp_path) -> None:
    big_folder, expected_checksum = big_folder
    cache = tmp_path / "cache"
    first = _child(big_folder, cache)
    journal = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:  # kill it once 10 chunks are journaled
        found = list((cache / "images").glob(".partial-*/progress.jsonl")) if (cache / "images").exists() else []
        if found and len(found[0].read_text().splitlines()) >= 10:
            journal = found[0]
            break
        time.sleep(0.2)
    assert journal is not None, "the build finished or stalled before 10 chunks were journaled"
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_chunks = sum(1 for line in journal.read_text().splitlines() if line.endswith("}"))  # whole lines only

    second = _child(big_folder, cache)
    out, _ = second.communicate(timeout=900)
    images, decoded, growth, checksum = map(int, out.split())
    assert images == N_FILES
    assert decoded <= N_FILES - done_chunks * 1024  # the journaled chunks (1024 files each) were not decoded again
    assert growth <= RSS_BOUND_MB, f"peak RSS grew by {growth} MB while caching {N_FILES} files"
    assert checksum == expected_checksum  # every image's pixels, the resumed chunks included

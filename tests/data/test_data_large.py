"""A 100,000-file folder: the cache is built streaming, in bounded memory, and a build killed half-way
resumes without decoding the finished chunks again (slow: about 40 s on the 2-core CI machine)."""

from __future__ import annotations

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
import numpy as np
from pathlib import Path
index = np.array([int(Path(p).stem) for p in ds.paths])  # file i holds image i (the fixture's)
want = np.load(sys.argv[3])[index % 256]
want[:, 0, 0] = np.stack([index & 255, (index >> 8) & 255, index >> 16], 1)
wrong = int((ds.images.numpy() != want.transpose(0, 3, 1, 2)).reshape(len(ds), -1).any(1).sum())
print(len(ds), calls[0], round(peak - base), len(set(index.tolist())), wrong)
"""


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> tuple[Path, Path]:
    """The folder and ``patterns.npy``: file ``c{i % 10}/{i:06d}.png`` holds random pattern i % 256 with
    its top-left pixel set to i (R, G, B = the low, middle and high byte), so every image is unique and the
    child checks each cached image, all of its pixels, against the file it came from."""
    root = tmp_path_factory.mktemp("big")
    patterns = np.random.default_rng(0).integers(0, 256, (256, 8, 8, 3), dtype=np.uint8)
    np.save(root.parent / "patterns.npy", patterns)
    for c in range(10):
        (root / f"c{c}").mkdir()
    for i in range(N_FILES):
        pixels = patterns[i % 256].copy()
        pixels[0, 0] = (i & 255, (i >> 8) & 255, i >> 16)
        Image.fromarray(pixels).save(root / f"c{i % 10}" / f"{i:06d}.png", "PNG")
    return root, root.parent / "patterns.npy"


def _child(folder: Path, cache: Path, patterns: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(cache), str(patterns)],
                            stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_a_100k_file_folder_caches_in_bounded_memory_and_resumes_after_a_kill(big_folder, tmp_path) -> None:
    big_folder, patterns = big_folder
    cache = tmp_path / "cache"
    first = _child(big_folder, cache, patterns)
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

    second = _child(big_folder, cache, patterns)
    out, _ = second.communicate(timeout=900)
    images, decoded, growth, distinct, wrong = map(int, out.split())
    assert images == N_FILES and distinct == N_FILES  # each file once
    assert decoded <= N_FILES - done_chunks * 1024  # the journaled chunks (1024 files each) were not decoded again
    assert growth <= RSS_BOUND_MB, f"peak RSS grew by {growth} MB while caching {N_FILES} files"
    assert wrong == 0, f"{wrong} cached images differ from their files"  # every pixel, resumed chunks included

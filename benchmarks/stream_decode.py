"""Decoding throughput of the streaming data path against torchvision's usual pipeline (RESULTS.md §12).

Both produce BYOL's two views of every image as uint8 tensors at the same output size, in a DataLoader
with the same number of worker processes (0 = in the calling process), reading the same extracted folder:

* (a) torchvision: ``ImageFolder`` + per view ``RandomResizedCrop(size)``, ``RandomHorizontalFlip()``,
  ``PILToTensor()`` (two views per image), default collation;
* (b) byol: ``StreamDataset`` + ``StreamLoader`` (decode once per image, two crops of the whole image,
  JPEG draft decoding when the crops allow it; the flip is left to the batched view ops, as in training).

Throughput is **images per second, each image giving two views**. Every trial consumes exactly ``--images``
images (a fresh random subset, the same for (a) and (b) of one repetition) so no worker is still busy
when the other contender's trial starts; persistent workers are started by an untimed warm-up trial. The
trials alternate A/B/A/B (B/A/B/A on odd repetitions) and the ratio is taken per pair. Data sets: the
train split of intel-scenes-96 (96 px natural photos; extracted to ``--workdir``), and ``--large`` JPEGs of
500x375 px made of mosaics of those photos (natural image statistics at a size where draft decoding applies).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream_decode.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream_decode.py --workers 0 --sizes 64 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from byol.data.archive import open_store
from byol.data.layout import discover
from byol.data.stream import StreamDataset
from byol.data.streamloader import StreamLoader
from byol.config.views import paper_views

ZIP = Path("/work/shared/datasets/intel-scenes-96.zip")


class TwoViews:
    """torchvision's view pipeline, twice per image (picklable for worker processes)."""

    def __init__(self, size: int) -> None:
        self.t = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])

    def __call__(self, im: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.t(im), self.t(im)


class Subset(torch.utils.data.Sampler):
    """The indices of the current trial, swapped in before each ``iter()`` (persistent workers)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def extract(workdir: Path) -> Path:
    root = workdir / "intel-scenes"
    if not (root / "train").is_dir():
        with zipfile.ZipFile(ZIP) as zf:
            zf.extractall(workdir, [m for m in zf.namelist() if m.startswith("intel-scenes/train/")])
    return root / "train"


def make_large(photos: Path, out: Path, count: int) -> Path:
    """``count`` 500x375 JPEGs (quality 90) in 2 class folders, each a 6x4 mosaic of 96 px photos cropped
    to 500x375: real photo content, so the JPEG decode costs what a camera image of that size costs."""
    if out.is_dir() and sum(1 for _ in out.rglob("*.jpg")) >= count:
        return out
    files = sorted(photos.rglob("*.jpg"))
    rng = np.random.default_rng(0)
    for i in range(count):
        tiles = [np.asarray(Image.open(files[j]).convert("RGB")) for j in rng.integers(0, len(files), 24)]
        rows = [np.concatenate(tiles[r * 6 : (r + 1) * 6], axis=1) for r in range(4)]
        mosaic = np.concatenate(rows, axis=0)[:375, :500]
        (out / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mosaic).save(out / f"c{i % 2}" / f"{i:05d}.jpg", quality=90)
    return out


class Contenders:
    """(a) and (b) over one folder at one size and worker count, each with persistent workers."""

    def __init__(self, root: Path, size: int, workers: int, batch: int) -> None:
        self.batch = batch
        self.tv_sampler = Subset()
        tv = datasets.ImageFolder(str(root), transform=TwoViews(size))
        self.tv = DataLoader(tv, batch_size=batch, sampler=self.tv_sampler, num_workers=workers,
                             persistent_workers=workers > 0)
        files = discover(open_store(root).list_files(), "train", str(root)).files
        assert [os.path.relpath(p, root) for p, _ in tv.samples] == files  # same files, same order
        ds = StreamDataset(root, files, channels=3, size=size, specs=paper_views(), seed=0)
        self.ours = StreamLoader(ds, workers=workers)
        self.n = len(files)

    def run_tv(self, idx: list[int]) -> int:
        self.tv_sampler.indices = idx
        return sum(len(views[0]) for views, _labels in self.tv)  # ((view1, view2), labels) per batch

    def run_ours(self, idx: list[int], epoch: int) -> int:
        batches = [torch.tensor(idx[k : k + self.batch]) for k in range(0, len(idx), self.batch)]
        return sum(len(b.crops1) for b in self.ours.batches(batches, epoch))

    def close(self) -> None:
        self.ours.close()
        it = getattr(self.tv, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.tv._iterator = None


def timed(fn, *args) -> float:
    t = time.perf_counter()
    n = fn(*args)
    return n / (time.perf_counter() - t)


def compare(name: str, root: Path, size: int, workers: int, images: int, reps: int, batch: int) -> dict:
    c = Contenders(root, size, workers, batch)
    rng = np.random.default_rng(size * 10 + workers)
    warm = rng.permutation(c.n)[: 2 * batch].tolist()
    c.run_tv(warm), c.run_ours(warm, 10_000)  # start the workers, fill the page cache's hot set
    a, b, ratios = [], [], []
    for rep in range(reps):
        idx = rng.permutation(c.n)[:images].tolist()
        if rep % 2 == 0:
            ra, rb = timed(c.run_tv, idx), timed(c.run_ours, idx, rep)
        else:
            rb, ra = timed(c.run_ours, idx, rep), timed(c.run_tv, idx)
        a.append(ra), b.append(rb), ratios.append(rb / ra)
    c.close()
    row = {"set": name, "size": size, "workers": workers, "torchvision": statistics.median(a),
           "byol": statistics.median(b), "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    print(f"{name:>14} {size:>4} {workers:>7} {row['torchvision']:>11.0f} {row['byol']:>9.0f} "
          f"{row['ratio']:>6.2f}x  ({row['min']:.2f}-{row['max']:.2f})", flush=True)
    return row


def profile(root: Path, size: int, images: int) -> None:
    """Where the streaming dataset's time goes, in-process (cProfile, top 20 by own time)."""
    files = discover(open_store(root).list_files(), "train", str(root)).files
    ds = StreamDataset(root, files, channels=3, size=size, specs=paper_views(), seed=0)
    keys = [(0, int(i)) for i in np.random.default_rng(0).permutation(len(files))[:images]]
    prof = cProfile.Profile()
    prof.runcall(lambda: [ds.__getitems__(keys[k : k + 64]) for k in range(0, len(keys), 64)])
    pstats.Stats(prof).sort_stats("tottime").print_stats(20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/byol-stream-bench"))
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    ap.add_argument("--images", type=int, default=2048, help="images per timed trial")
    ap.add_argument("--reps", type=int, default=4, help="trials per contender (alternating)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--large", type=int, default=1024, help="500x375 JPEGs to generate (0: skip that set)")
    ap.add_argument("--profile", action="store_true", help="also profile the streaming dataset in-process")
    a = ap.parse_args()
    torch.set_num_threads(1)
    photos = extract(a.workdir)
    sets = [("intel-scenes", photos)]
    if a.large:
        sets.append(("500x375 mosaic", make_large(photos, a.workdir / "large-500x375", a.large)))
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores); images/s, each image -> two views")
    print(f"{'set':>14} {'size':>4} {'workers':>7} {'torchvision':>11} {'byol':>9} {'ratio':>7} (min-max)")
    for name, root in sets:
        for size in a.sizes:
            for w in a.workers:
                compare(name, root, size, w, min(a.images, sum(1 for _ in root.rglob("*.jpg"))), a.reps, a.batch)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if a.profile:
        for name, root in sets:
            print(f"\n--- profile: {name}, size {a.sizes[0]}, in-process")
            profile(root, a.sizes[0], min(a.images, 2048))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The streaming data path: image folders too big to decode once are decoded per sample, every epoch.

The decode-once cache (:mod:`byol.data.folder`) stores each image as its centre square at
``data.image_size``, so a random crop can never see outside that square, and at ImageNet's size it needs
N x 3 x 224 x 224 bytes (~190 GB). Here a map-style :class:`StreamDataset` reads one file per sample and
returns BYOL's two random-resized-crop regions taken from the **whole** image, each resized to the view
size as uint8, as the paper's input pipeline does (Grill et al. 2020, section 3.3 and appendix B). JPEGs
are decoded at reduced scale when every crop allows it (:func:`byol.data.decode.draft_scale`). The other
view ops (flip, colour, grayscale, blur, solarize) run batched on the crops in the training process
(:meth:`byol.augment.TwoViewAugment.from_crops`), as on the cached path.

Crops follow the BYOL reference code (DeepMind ``byol/utils/dataset.py``, ``_decode_and_random_crop``),
like :func:`byol.augment.ops.sample_crop_boxes` on the cached path: area ~ U[scale] x image area, log
aspect ratio ~ U[log ratio], sides rounded to whole pixels and clipped to the image (sampled once, no
retries: torchvision's ``RandomResizedCrop.get_params`` instead retries 10 times and falls back to a
centre crop), position uniform over the valid offsets.

Reproducibility: a sample's crops are a function of ``(seed, epoch, index)`` only (:func:`crop_rng`), so
a resumed run, any number of DataLoader workers and any sharding over ranks see the same crops (the rank
is not needed: each index is drawn by exactly one rank per epoch). A file that cannot be read or decoded
is replaced by a file drawn from the same stream among those not otherwise in its batch (so a batch stays
full and never holds one image twice, and the position still decides everything), and reported once,
with the cache path's reasons. Under torchrun "its batch" is the rank's share of the global batch.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from byol.config import DataConfig
from byol.data.archive import FileStore, open_store
from byol.data.batches import CropBatch
from byol.data.decode import Box, UnreadableImage, decode_crops
from byol.data.folder import decode_subset, default_workers, probe_files, source_name
from byol.data.imageset import ImageSet
from byol.data.layout import Layout, discover
from byol.data.sizes import Sizes
from byol.data.sources import folder_path
from byol.data.workers import read_error
from byol.errors import ConfigError, DataError
from byol.config.views import ViewSpec

#: ``data.stream: auto`` streams a folder whose decoded images (N x C x S x S bytes at ``data.image_size``)
#: would exceed this. Below it the decode-once paths are faster per epoch (no JPEG decoding per step) and
#: fit: in RAM for S > 96 px next to the training process on a 32 GB machine, and as a memory-mapped cache
#: that the page cache holds for S <= 96 px. Above it (ImageNet at any S >= 48 px) they would not.
#: CIFAR-10 (0.15 GB) and intel-scenes (0.4 GB at 96 px) stay far below.
STREAM_AUTO_BYTES = 8 << 30

#: Images decoded (centre square, in memory) for the normalisation statistics, the online kNN monitor and
#: the end-of-run verdict of a streamed run; the verdict's kNN uses at most 12,000 (byol.train.verdict).
SAMPLE_IMAGES = 12_000

#: Consecutive unreadable files after which a sample gives up (the data set is broken, not one file).
MAX_REPLACEMENTS = 64

_M64 = (1 << 64) - 1


def crop_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random stream of sample ``index`` in ``epoch``: the same in any process, worker or rank.

    Only ``random()`` is drawn from it, whose sequence for an integer seed Python keeps stable across
    versions (``randint`` and friends are not guaranteed)."""
    return random.Random(((seed & _M64) << 128) | ((epoch & _M64) << 64) | (index & _M64))


def sample_box(rng: random.Random, width: int, height: int, scale: Sequence[float], ratio: Sequence[float]) -> Box:
    """One random-resized-crop box ``(x0, y0, w, h)`` of a ``width x height`` image (module docstring)."""
    area = width * height * (scale[0] + (scale[1] - scale[0]) * rng.random())
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = math.exp(log_lo + (log_hi - log_lo) * rng.random())
    w = max(1, min(round(math.sqrt(area * aspect)), width))
    h = max(1, min(round(math.sqrt(area / aspect)), height))
    x0 = min(int(rng.random() * (width - w + 1)), width - w)
    y0 = min(int(rng.random() * (height - h + 1)), height - h)
    return x0, y0, w, h


class Sample(NamedTuple):
    """One sample's two crops, the files skipped to get them, the used file's conversions and its index."""

    arrays: list[np.ndarray]
    failed: list[tuple[int, str]]
    notes: list[tuple[int, str]]
    file: int


class StreamDataset(torch.utils.data.Dataset):
    """Map-style dataset over the files of a folder or zip: ``(epoch, index)`` -> the two views' crops.

    Keys are ``(epoch, index)`` pairs so that a worker knows the epoch without shared state;
    :meth:`__getitems__` builds a whole :class:`CropBatch` in the worker (one copy per crop, no collation
    in the parent). The store is opened once per process (a forked worker never shares the parent's zip
    file position).
    """

    def __init__(self, root: Path, files: Sequence[str], *, channels: int, size: int,
                 specs: tuple[ViewSpec, ViewSpec], seed: int, draft: bool = True) -> None:
        if channels not in (1, 3) or size < 1 or not files:
            raise ValueError(f"StreamDataset: need files, 1 or 3 channels and a positive size, got {len(files)} "
                             f"files, {channels} channels, size {size}")
        self.root = Path(root)
        self.files = list(files)
        self.channels, self.size, self.seed, self.draft = channels, int(size), int(seed), draft
        self.crops = tuple((tuple(s.crop_scale), tuple(s.crop_ratio)) for s in specs)
        self.resample = tuple(s.interpolation for s in specs)
        self._store: FileStore | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_pid": -1}  # each process opens its own

    def store(self) -> FileStore:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.root)
            self._pid = os.getpid()
        return self._store

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store = None

    def boxes(self, rng: random.Random, width: int, height: int) -> list[Box]:
        """The two views' crop boxes of a ``width x height`` image, drawn from ``rng``."""
        return [sample_box(rng, width, height, scale, ratio) for scale, ratio in self.crops]

    def views(self, epoch: int, index: int, taken: AbstractSet[int] = frozenset()) -> Sample:
        """The crops (uint8 ``[H, W(, C)]``) of sample ``index`` in ``epoch``, the files skipped on the way,
        the conversions of the file used and its index. An unusable file is replaced by a seeded draw of a
        file outside ``taken`` (the batch's other files) and outside those already failed, with the crops
        drawn on from the same random stream; DataError after :data:`MAX_REPLACEMENTS`."""
        rng = crop_rng(self.seed, epoch, index)
        failed: list[tuple[int, str]] = []
        j = index
        for _ in range(MAX_REPLACEMENTS):
            try:
                crops = decode_crops(self.store().read(self.files[j]), self.channels, self.size,
                                     lambda w, h: self.boxes(rng, w, h), resample=self.resample, draft=self.draft)
            except UnreadableImage as exc:
                failed.append((j, exc.reason))
            except (OSError, KeyError) as exc:
                failed.append((j, read_error(exc) if isinstance(exc, OSError) else "missing from the archive"))
            else:
                return Sample(crops.arrays, failed, [(j, note) for note in crops.notes], j)
            j = self._replacement(rng, {index, *taken, *(f for f, _ in failed)})
        raise DataError(f"{len(failed)} files in a row from {self.files[index]} in {self.root} cannot be decoded "
                        f"({failed[-1][1]}, ...); check the files")

    def _replacement(self, rng: random.Random, excluded: AbstractSet[int]) -> int:
        """A file index outside ``excluded``, drawn uniformly from ``rng`` (rejection: the batch is a small
        part of the files in practice). Not the next index: that file may be in the batch already, and the
        same image twice in a batch is a false negative for the contrastive methods."""
        n = len(self.files)
        if len(excluded) >= n:
            raise DataError(f"{self.root}: too few readable files to fill a batch without repeating an image "
                            f"({n} files, {len(excluded)} in the batch or unreadable); lower the batch size")
        while True:
            j = min(int(rng.random() * n), n - 1)
            if j not in excluded:
                return j

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> CropBatch:
        c, s = self.channels, self.size
        crops = [torch.empty((len(keys), c, s, s), dtype=torch.uint8) for _ in self.crops]
        if torch.utils.data.get_worker_info() is not None:  # written straight into the memory the parent maps
            crops = [t.share_memory_() for t in crops]
        out = [t.numpy() for t in crops]
        failed: list[tuple[int, str]] = []
        notes: list[tuple[int, str]] = []
        taken = {index for _, index in keys}  # a replacement joins them: no file twice in the batch
        for row, (epoch, index) in enumerate(keys):
            sample = self.views(epoch, index, taken)
            taken.add(sample.file)
            for view, arr in zip(out, sample.arrays):
                view[row] = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr
            failed += sample.failed
            notes += sample.notes
        idx = torch.tensor([index for _, index in keys], dtype=torch.int64)
        return CropBatch(crops[0], crops[1], idx, tuple(failed), tuple(notes))

    def __getitem__(self, key: tuple[int, int]) -> CropBatch:
        return self.__getitems__([key])


@dataclass
class StreamSource:
    """A streamed training set: the dataset, an in-memory sample of it (centre squares at
    ``data.image_size``, with labels) for statistics, monitoring and the verdict, and the worker count
    (:func:`byol.data.streamloader.stream_loader` makes the training loop's batch source of it)."""

    dataset: StreamDataset
    sample: ImageSet
    workers: int

    def __len__(self) -> int:
        return len(self.dataset)


def wants_stream(mode: str, *, num_files: int, channels: int, image_size: int | None) -> bool:
    """``data.stream`` resolved: ``on``/``off`` as said; ``auto`` streams when the decoded images at
    ``image_size`` would exceed :data:`STREAM_AUTO_BYTES` (never without an ``image_size``: the cache
    path then keeps the native size, as before)."""
    if mode in ("on", "off"):
        return mode == "on"
    return image_size is not None and num_files * channels * image_size * image_size > STREAM_AUTO_BYTES


def _subset(layout: Layout, keep: Tensor) -> Layout:
    idx = keep.sort().values.tolist()
    labels = None if layout.labels is None else [layout.labels[i] for i in idx]
    return Layout(files=[layout.files[i] for i in idx], labels=labels, classes=layout.classes)


def _seeded_subset(layout: Layout, n: int, seed: int) -> Layout:
    """``n`` files of ``layout`` drawn with ``seed`` (kept in layout order), or all of them."""
    if n >= len(layout.files):
        return layout
    return _subset(layout, torch.randperm(len(layout.files), generator=torch.Generator().manual_seed(seed))[:n])


def open_stream(d: DataConfig, specs: tuple[ViewSpec, ViewSpec], *, seed: int, progress: bool = True
                ) -> StreamSource | None:
    """The streamed training set of ``d``, or None when the decode-once path is used (:func:`wants_stream`).

    The output size of the crops is ``data.view_size``, else ``data.image_size``, else the shorter side of
    the folder's most common image size. ``data.limit`` is the cache path's seeded draw (seed + 777), over
    the files (the cache path draws over the decoded images, so with unreadable files the two subsets
    differ); the sample is another seeded subset of :data:`SAMPLE_IMAGES` files.
    """
    path = folder_path(d.source)
    if d.stream == "off" or (d.stream == "auto" and (d.image_size is None or path is None or not path.exists())):
        return None
    if path is None:
        raise ConfigError(f"data.stream=on needs an image folder or a .zip, not the named data set {d.source!r}; "
                          "use data.stream=auto or off")
    source, name = str(path), source_name(path)
    store = open_store(path)
    try:
        layout = discover(store.list_files(), d.split, source)
        if d.limit is not None:
            layout = _seeded_subset(layout, d.limit, seed + 777)
        n = len(layout.files)
        if d.stream == "auto" and not wants_stream("auto", num_files=n, channels=3, image_size=d.image_size):
            return None  # not even at 3 channels: no need to read a header
        channels, common = probe_files(store, layout.files, source)
        if not wants_stream(d.stream, num_files=n, channels=channels, image_size=d.image_size):
            return None
        size = Sizes.resolve(decode=d.image_size, view=d.view_size, images=d.image_size or min(common)).view
        workers = default_workers() if d.workers is None else d.workers
        sample = decode_subset(store, _seeded_subset(layout, SAMPLE_IMAGES, seed + 778),
                               image_size=d.image_size or size, channels=channels, workers=max(1, workers),
                               progress=progress, source=source, name=name)
    finally:
        store.close()
    dataset = StreamDataset(path, layout.files, channels=channels, size=size, specs=specs, seed=seed)
    return StreamSource(dataset, sample, workers)

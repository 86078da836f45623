"""Data: sources (Fashion-MNIST, CIFAR, STL-10, image folders and zips), the decode-once uint8 cache,
the streaming path for folders too big for it (:mod:`byol.data.stream`), and batch iteration. Everything downstream sees uint8 ``[N, C, H, W]`` tensors in an :class:`ImageSet`.

The public names are imported on first use (PEP 562): decoding worker processes import
``byol.data.workers`` and must not pay for importing torch, which every name here needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from byol._lazy import lazy_exports

if TYPE_CHECKING:
    from byol.data.batches import BatchSource, CachedImages
    from byol.data.folder import SkippedImagesWarning
    from byol.data.imageset import ImageSet
    from byol.data.sampler import BatchIterator, gather_batch
    from byol.data.sizes import Sizes
    from byol.data.sources import DATASET_ALIASES, load_images
    from byol.data.stats import DATASET_STATS, channel_stats, normalization
    from byol.data.stream import StreamDataset, open_stream
    from byol.data.streamloader import StreamLoader

_EXPORTS: dict[str, str] = {
    "DATASET_ALIASES": "byol.data.sources",
    "DATASET_STATS": "byol.data.stats",
    "BatchIterator": "byol.data.sampler",
    "BatchSource": "byol.data.batches",
    "CachedImages": "byol.data.batches",
    "ImageSet": "byol.data.imageset",
    "Sizes": "byol.data.sizes",
    "SkippedImagesWarning": "byol.data.folder",
    "StreamDataset": "byol.data.stream",
    "StreamLoader": "byol.data.streamloader",
    "channel_stats": "byol.data.stats",
    "gather_batch": "byol.data.sampler",
    "load_images": "byol.data.sources",
    "normalization": "byol.data.stats",
    "open_stream": "byol.data.stream",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

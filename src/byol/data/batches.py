"""What the training loop draws its micro-batches from, whether the images are held in memory or streamed.

One interface, :class:`BatchSource`, so that the loop never asks which path it is on: a source turns the
loop's index batches of an epoch (:class:`~byol.data.sampler.BatchIterator`: seeded, resumable, sharded
by rank, the same on both paths) into :class:`ViewInputs`, and each of those makes its two views with the
loop's view maker. The cached path (:class:`CachedImages`) gathers whole uint8 images and runs every view
op (``augment(images, ...)``); the streamed path (:class:`~byol.data.streamloader.StreamLoader`) delivers
each view's crop decoded in DataLoader workers (:class:`CropBatch`) and runs every op but the crop
(``augment.from_crops(...)``). The position ``(epoch, step)`` alone decides what comes next on both paths,
so a resumed run is bit-identical.

The types both streaming modules share (:class:`CropBatch`, :data:`SkipReport`) live here: both import
them from this module and only :mod:`byol.data.streamloader` imports :mod:`byol.data.stream`, so the
data package's imports have no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from byol.data.sampler import gather_batch

__all__ = ["BatchSource", "CachedImages", "CropBatch", "ImageBatch", "SkipReport", "TwoViews", "ViewInputs"]

#: Called with (skipped files, their reasons) whenever an epoch found new ones (e.g. to rewrite
#: ``skipped_files.txt`` of a run directory).
SkipReport = Callable[[list[str], dict[str, str]], None]


class TwoViews(Protocol):
    """The view maker (:class:`byol.augment.TwoViewAugment`): uint8 images, or each view's crop, to the
    two float views, then any small (multi-crop) ones of ``views.small_crops``; ``kw`` is the loop's
    ``shard`` under torchrun."""

    def __call__(self, images: Tensor, generator: torch.Generator | None, **kw: Any) -> tuple[Tensor, ...]: ...

    def from_crops(self, crops1: Tensor, crops2: Tensor, generator: torch.Generator | None,
                   **kw: Any) -> tuple[Tensor, Tensor]: ...


class ViewInputs(Protocol):
    """One micro-batch as a source delivers it: it knows how its views are made (the two, then any small ones)."""

    def views(self, augment: TwoViews, generator: torch.Generator | None, device: torch.device,
              **kw: Any) -> tuple[Tensor, ...]: ...


class BatchSource(Protocol):
    """What the training loop draws from: ``len()`` images per epoch, and the micro-batches of the given
    index batches of ``epoch``, in order (a resume passes the index batches from its position on)."""

    def __len__(self) -> int: ...

    def batches(self, index_batches: Iterable[Tensor], epoch: int) -> Iterator[ViewInputs]: ...


class ImageBatch(NamedTuple):
    """Whole uint8 images of a micro-batch, gathered on the training device when their views are made."""

    images: Tensor  #: the whole set, uint8 ``[N, C, H, W]`` (CPU, memory-mapped or on the device)
    indices: Tensor  #: int64 ``[B]``

    def views(self, augment: TwoViews, generator: torch.Generator | None, device: torch.device,
              **kw: Any) -> tuple[Tensor, ...]:
        return augment(gather_batch(self.images, self.indices, device), generator, **kw)


class CropBatch(NamedTuple):
    """A batch of the two views' crops, as the DataLoader delivers it."""

    crops1: Tensor  #: uint8 ``[B, C, S, S]``, view 1 (T)
    crops2: Tensor  #: uint8 ``[B, C, S, S]``, view 2 (T')
    indices: Tensor  #: int64 ``[B]``, the requested sample indices
    failed: tuple[tuple[int, str], ...]  #: (file index, reason) of files skipped on the way
    notes: tuple[tuple[int, str], ...]  #: (file index, conversion) of the files used

    def views(self, augment: TwoViews, generator: torch.Generator | None, device: torch.device,
              **kw: Any) -> tuple[Tensor, Tensor]:
        """The crops moved to ``device``, then every view op but the crop (``augment.from_crops``)."""
        crops = (c.to(device, non_blocking=True) for c in (self.crops1, self.crops2))
        return augment.from_crops(*crops, generator, **kw)


class CachedImages:
    """The cached path's :class:`BatchSource`: uint8 images held whole (in memory, memory-mapped or on the
    accelerator), gathered per micro-batch by :func:`~byol.data.sampler.gather_batch`."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, index_batches: Iterable[Tensor], epoch: int) -> Iterator[ImageBatch]:
        """One :class:`ImageBatch` per index batch (``epoch`` plays no part: the indices say everything)."""
        return (ImageBatch(self.images, idx) for idx in index_batches)

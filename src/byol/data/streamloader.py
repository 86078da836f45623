"""Batches of the streaming path: a persistent-worker DataLoader over a :class:`StreamDataset`, fed with the
same index batches the cached path uses (:class:`~byol.data.sampler.BatchIterator`: seeded per epoch,
resumable mid-epoch, sharded by rank), plus the report of the files skipped while streaming.

Why the trainer's index batches drive the loader instead of a torch sampler: the position ``(epoch,
step)`` alone must determine what comes next (exact resume), the batches must be the cached path's (so
the two paths differ only in the pixels), and ranks must take disjoint slices of one global permutation.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from byol.runtime import dist
from byol.data.folder import SkippedImagesWarning, report_line
from byol.data.sampler import BatchIterator
from byol.data.batches import CropBatch, SkipReport
from byol.data.stream import StreamDataset, StreamSource
from byol.errors import DataError

__all__ = ["SkipReport", "StreamLoader", "stream_loader"]


class _EpochBatches:
    """A batch sampler whose batches are swapped in before each epoch: persistent workers outlive epochs,
    and the DataLoader re-reads its batch sampler at every ``iter()``."""

    def __init__(self) -> None:
        self.source: Iterable[list[tuple[int, int]]] = ()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.source)


def _first(batch: CropBatch) -> CropBatch:
    return batch  # the dataset builds whole batches (__getitems__): nothing to collate


class StreamLoader:
    """Two-view crop batches of a :class:`StreamDataset`, decoded in ``workers`` DataLoader processes: the
    streamed path's :class:`~byol.data.batches.BatchSource`.

    ``workers=0`` decodes in the calling process. Workers are persistent (started at the first epoch, kept
    across epochs, stopped by :meth:`close`); batches are pinned for CUDA with ``pin_memory``. Each batch
    holds exactly the requested indices in order, so the result does not depend on ``workers``.
    Files skipped on the way are counted (:attr:`skip_reasons`, :attr:`converted`) and, at the end of an
    epoch that found new ones, reported as one :class:`SkippedImagesWarning` line and to ``report`` (with
    several processes: the files of all ranks, by rank 0 alone).
    """

    def __init__(self, dataset: StreamDataset, *, workers: int, pin_memory: bool = False,
                 report: SkipReport | None = None, prefetch: int = 2) -> None:
        if workers < 0:
            raise DataError(f"data.workers must be >= 0, got {workers}")
        self.dataset = dataset
        self.workers = workers
        self.report = report
        self.skip_reasons: dict[str, str] = {}
        self._converted: dict[str, set[str]] = {}
        self._reported = 0
        self._sampler = _EpochBatches()
        # The DataLoader draws its workers' base seed at every epoch start: from a private generator, so that
        # streaming leaves torch's global random state as the cached path does (the crops use neither).
        self._loader = DataLoader(dataset, batch_sampler=self._sampler, num_workers=workers, collate_fn=_first,
                                  pin_memory=pin_memory, persistent_workers=workers > 0,
                                  prefetch_factor=prefetch if workers > 0 else None,
                                  generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def skipped(self) -> list[str]:
        return sorted(self.skip_reasons)

    @property
    def converted(self) -> dict[str, int]:
        """Conversion -> number of distinct files streamed so far that needed it (each counted once, as the
        cache does; the sample's conversions were reported when it was decoded)."""
        return {note: len(files) for note, files in self._converted.items()}

    def add_skipped(self, reasons: dict[str, str]) -> None:
        """Start from files already reported as skipped (by the sample decoded before training)."""
        self.skip_reasons.update(reasons)
        self._reported = len(self.skip_reasons)

    def _count(self, batch: CropBatch) -> None:
        files = self.dataset.files
        for j, why in batch.failed:
            self.skip_reasons.setdefault(files[j], why)
        for j, note in batch.notes:
            self._converted.setdefault(note, set()).add(files[j])

    def _merge_ranks(self) -> None:
        """Every rank's skipped and converted files (each streamed its own part of the epoch), on every rank."""
        for reasons, converted in dist.all_objects((self.skip_reasons, self._converted)):
            for name, why in reasons.items():
                self.skip_reasons.setdefault(name, why)
            for note, files in converted.items():
                self._converted.setdefault(note, set()).update(files)

    def _report_new(self) -> None:
        """At an epoch's end (reached by every rank at the same step): the files of every rank, reported by rank
        0 alone (one warning line, one ``report`` call) when the epoch found new ones."""
        if dist.world_size() > 1:
            self._merge_ranks()
        if len(self.skip_reasons) <= self._reported:
            return
        self._reported = len(self.skip_reasons)
        if not dist.is_main():
            return
        skipped = self.skipped
        line = report_line(str(self.dataset.root), len(self) - len(skipped), skipped, self.skip_reasons, self.converted)
        warnings.warn(line + " (found while streaming)", SkippedImagesWarning, stacklevel=3)
        if self.report is not None:
            self.report(skipped, dict(self.skip_reasons))

    def batches(self, index_batches: Iterable[Tensor], epoch: int) -> Iterator[CropBatch]:
        """The crop batches of ``index_batches`` (int64 index tensors of ``epoch``, e.g. from
        :meth:`BatchIterator.indices`), in order; reports new skipped files once the epoch is complete.
        Closing this iterator before its end (or dropping it) stops the workers (:meth:`close`): a trainer's
        last epoch ends mid-way, and nothing else stops them; the next epoch starts new ones."""
        self._sampler.source = ([(epoch, int(i)) for i in idx.tolist()] for idx in index_batches)
        try:
            for batch in self._loader:
                self._count(batch)
                yield batch
        except DataError as exc:  # re-raised from a worker with its traceback: keep the message itself
            raise DataError(str(exc).split("DataError: ")[-1].split("\\n")[0]) from None
        except GeneratorExit:  # abandoned mid-epoch (the end of training): stop the workers now
            self.close()
            raise
        self._report_new()

    def epoch(self, epoch: int, batch_size: int, *, seed: int, start_step: int = 0, rank: int | None = None,
              world_size: int | None = None) -> Iterator[CropBatch]:
        """This rank's batches of ``epoch`` from ``start_step`` without a trainer: the index batches of a
        :class:`BatchIterator` over the whole dataset (``batch_size`` global; rank and world size from
        ``torch.distributed`` when initialised, else one process)."""
        rank = dist.rank() if rank is None else rank
        world_size = dist.world_size() if world_size is None else world_size
        it = BatchIterator(len(self), batch_size, seed=seed, rank=rank, world_size=world_size)
        return self.batches(it.indices(epoch, start_step), epoch)

    def close(self) -> None:
        """Stop the worker processes (a later epoch starts new ones)."""
        iterator = getattr(self._loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loader._iterator = None  # type: ignore[attr-defined]
        self.dataset.close()


def stream_loader(source: StreamSource, *, pin_memory: bool = False, report: SkipReport | None = None) -> StreamLoader:
    """A :class:`StreamLoader` over ``source``'s dataset with its worker count, counting the files its sample
    already skipped (``report``: see :class:`StreamLoader`)."""
    loader = StreamLoader(source.dataset, workers=source.workers, pin_memory=pin_memory, report=report)
    loader.add_skipped(source.sample.skip_reasons)
    return loader

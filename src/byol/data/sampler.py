"""Batches of indices for training: seeded per epoch, resumable mid-epoch, sharded across ranks."""

from __future__ import annotations

from collections.abc import Iterator

import hashlib

import torch

from byol.errors import ConfigError, DataError


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch``'s order in a run seeded with ``seed``: 63 bits of the sha256 of both.

    A hash, not ``seed + epoch``: with a sum, seed s+1 replayed seed s's orders shifted by one epoch, so
    runs meant to differ by their seed trained on the same batches. Any two ``(seed, epoch)`` pairs now
    give unrelated generators, and the pair alone still decides the order (exact resume)."""
    digest = hashlib.sha256(f"byol-epoch-order:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class BatchIterator:
    """Index batches over ``num_samples`` items for one rank.

    Every rank draws the same permutation, ``torch.randperm`` seeded with :func:`epoch_seed` of ``(seed,
    epoch)``; global batch
    ``b`` is ``perm[b * batch_size : (b + 1) * batch_size]`` and rank ``r`` takes the ``r``-th contiguous
    slice of ``batch_size // world_size`` of it. So the union over ranks is exactly the single-process
    batch, and the position ``(epoch, step)`` alone determines what comes next (exact resume).

    With ``drop_last=False`` the final short batch is split among ranks as evenly as possible (sizes may
    differ by one and some ranks may get none); use it for evaluation, not for synchronised training.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        # Guards on this class's own arguments (for a trainer, ``batch_size`` is one micro-batch): a run's
        # ``optim.batch_size`` was checked against accumulation and processes by byol.config.check_batch.
        if batch_size < 1:
            raise ConfigError(f"BatchIterator: batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        if batch_size % world_size:
            raise ConfigError(f"BatchIterator: batch_size {batch_size} is not divisible by world_size {world_size}")
        if num_samples < 1:
            raise DataError("the data set is empty; check the data source")
        if drop_last and num_samples < batch_size:
            raise DataError(
                f"dataset has {num_samples} images, fewer than batch size {batch_size}: lower --batch-size"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.local_batch_size = batch_size // world_size

    @property
    def steps_per_epoch(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __len__(self) -> int:
        return self.steps_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's global order of all indices (identical on every rank)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def indices(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        """This rank's int64 index tensors for steps ``start_step, ..., steps_per_epoch - 1`` of ``epoch``."""
        steps = self.steps_per_epoch
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step {start_step} is outside an epoch of {steps} steps")
        perm = self.permutation(epoch)
        lo, hi = self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size
        for step in range(start_step, steps):
            batch = perm[step * self.batch_size : (step + 1) * self.batch_size]
            if len(batch) == self.batch_size:
                yield batch[lo:hi].clone()
            else:
                yield torch.tensor_split(batch, self.world_size)[self.rank].clone()


def gather_batch(images: torch.Tensor, idx: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``images[idx]`` (order of ``idx`` kept) on ``device``.

    For CPU (possibly memory-mapped) storage the rows are read in ascending index order, which turns
    random access into a forward sweep over the file, then put back in ``idx`` order. A batch headed to
    CUDA is pinned first so the copy can overlap with compute (``non_blocking``).
    """
    device = torch.device(device)
    idx = idx.to(torch.int64)
    if images.device.type != "cpu":
        return images[idx.to(images.device)].to(device, non_blocking=True)
    sorted_idx, order = torch.sort(idx.cpu())
    batch = torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype)
    batch[order] = images[sorted_idx]
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)

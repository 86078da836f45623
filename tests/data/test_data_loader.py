"""BatchIterator (per-epoch permutations, resume, rank sharding) and gather_batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from byol.data import BatchIterator, gather_batch
from byol.errors import ConfigError, DataError


def _epoch(it: BatchIterator, epoch: int, start_step: int = 0) -> list[list[int]]:
    return [b.tolist() for b in it.indices(epoch, start_step)]


def test_each_index_once_per_epoch() -> None:
    it = BatchIterator(10, 4, seed=3, drop_last=False)
    assert it.steps_per_epoch == 3 == len(it)
    batches = _epoch(it, 0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in b) == list(range(10))
    dropped = BatchIterator(10, 4, seed=3)
    assert dropped.steps_per_epoch == 2
    flat = [i for b in _epoch(dropped, 0) for i in b]
    assert len(flat) == len(set(flat)) == 8 and flat == [i for b in batches[:2] for i in b]


def test_deterministic_per_seed_and_epoch() -> None:
    a, b = BatchIterator(50, 10, seed=1), BatchIterator(50, 10, seed=1)
    assert _epoch(a, 0) == _epoch(b, 0) and _epoch(a, 5) == _epoch(b, 5)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(BatchIterator(50, 10, seed=2), 0)
    assert all(t.dtype == torch.int64 for t in a.indices(0))


def test_distinct_seeds_give_unrelated_orders_not_the_same_orders_shifted_by_an_epoch() -> None:
    """Seed s+1's epoch e must not be seed s's epoch e+1 (a seed sweep would train on the same orders)."""
    orders = {(s, e): BatchIterator(50, 10, seed=s).permutation(e).tolist() for s in range(4) for e in range(4)}
    for (s, e), order in orders.items():
        for (t, f), other in orders.items():
            if (s, e) != (t, f):
                assert order != other, f"seed {s} epoch {e} repeats seed {t} epoch {f}"
    # shifted runs share no batch at all (a mere reordering of the epoch's batches would pass the test above)
    batches = lambda s, e: {tuple(sorted(b)) for b in _epoch(BatchIterator(50, 10, seed=s), e)}  # noqa: E731
    assert not batches(1, 0) & batches(0, 1) and not batches(2, 3) & batches(3, 2)


@pytest.mark.parametrize("start", [0, 1, 3, 5])
def test_resume_mid_epoch(start: int) -> None:
    it = BatchIterator(23, 4, seed=0)
    assert _epoch(it, 2, start_step=start) == _epoch(it, 2)[start:]
    with pytest.raises(ValueError):
        list(it.indices(0, start_step=6))


def test_ranks_get_disjoint_halves_of_each_global_batch() -> None:
    single = BatchIterator(40, 8, seed=7)
    r0 = BatchIterator(40, 8, seed=7, rank=0, world_size=2)
    r1 = BatchIterator(40, 8, seed=7, rank=1, world_size=2)
    assert r0.steps_per_epoch == r1.steps_per_epoch == single.steps_per_epoch == 5
    for g, a, b in zip(_epoch(single, 1), _epoch(r0, 1), _epoch(r1, 1), strict=True):
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert a + b == g


def test_uneven_last_batch_split_across_ranks() -> None:
    ranks = [BatchIterator(10, 4, seed=0, rank=r, world_size=2, drop_last=False) for r in range(2)]
    last = [_epoch(it, 0)[-1] for it in ranks]
    assert [len(x) for x in last] == [1, 1]
    assert sorted(i for it in ranks for b in _epoch(it, 0) for i in b) == list(range(10))


def test_errors() -> None:
    with pytest.raises(DataError, match="dataset has 5 images, fewer than batch size 8: lower --batch-size"):
        BatchIterator(5, 8, seed=0)
    assert BatchIterator(5, 8, seed=0, drop_last=False).steps_per_epoch == 1
    with pytest.raises(ConfigError, match="not divisible"):
        BatchIterator(100, 10, seed=0, world_size=3)
    with pytest.raises(ValueError):
        BatchIterator(100, 10, seed=0, rank=2, world_size=2)
    with pytest.raises(DataError, match="empty"):
        BatchIterator(0, 1, seed=0, drop_last=False)


def test_gather_batch_keeps_order() -> None:
    images = torch.arange(6 * 1 * 2 * 2, dtype=torch.uint8).reshape(6, 1, 2, 2)
    idx = torch.tensor([4, 0, 5, 0, 2])
    out = gather_batch(images, idx, "cpu")
    assert torch.equal(out, images[idx]) and out.dtype == torch.uint8


def test_gather_batch_from_memory_map(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (20, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", array)
    images = torch.from_numpy(np.load(tmp_path / "x.npy", mmap_mode="c"))
    it = BatchIterator(20, 6, seed=11)
    for idx in it.indices(0):
        assert np.array_equal(gather_batch(images, idx, torch.device("cpu")).numpy(), array[idx.numpy()])

"""Normalisation statistics."""

from __future__ import annotations

import pytest
import torch

from byol.data import DATASET_ALIASES, DATASET_STATS, channel_stats


def test_known_datasets_have_stats() -> None:
    for name in set(DATASET_ALIASES.values()):
        mean, std = DATASET_STATS[name]
        channels = 1 if name == "fashion-mnist" else 3
        assert len(mean) == len(std) == channels
        assert all(0 < m < 1 for m in mean) and all(0 < s < 0.5 for s in std)


def test_channel_stats_matches_direct_computation() -> None:
    images = torch.randint(0, 256, (30, 3, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)


def test_channel_stats_constant_and_sampled() -> None:
    images = torch.full((4, 1, 3, 3), 255, dtype=torch.uint8)
    assert channel_stats(images) == ((1.0,), (0.0,))
    # half black, half white images: a sample of 200 of 1000 lands near 0.5
    mixed = torch.cat([torch.zeros(500, 1, 2, 2), torch.full((500, 1, 2, 2), 255)]).to(torch.uint8)
    (m,), (s,) = channel_stats(mixed, max_images=200)
    assert 0.35 < m < 0.65 and s > 0.45
    with pytest.raises(ValueError):
        channel_stats(torch.zeros(2, 3, 4, 4))

"""Per-channel normalisation statistics, in [0, 1] pixel units."""

from __future__ import annotations

import torch

Stats = tuple[tuple[float, ...], tuple[float, ...]]

DATASET_STATS: dict[str, Stats] = {
    # Computed here from the real training set (60,000 images): all pixels / 255, then numpy .mean() and
    # population .std() (ddof=0) over every pixel of train-images-idx3-ubyte.gz.
    "fashion-mnist": ((0.2860,), (0.3530,)),
    # The widely used training-set values (per-pixel mean and population std over the 50,000 train images).
    # Note: the often copied std (0.2023, 0.1994, 0.2010) is not the pixel std; these are.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # Commonly used STL-10 values (computed over the labeled train and unlabeled splits).
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
}


def channel_stats(images: torch.Tensor, max_images: int = 10_000, seed: int = 0) -> Stats:
    """Per-channel mean and (population) std of uint8 ``[N, C, H, W]`` images in [0, 1] units.

    At most ``max_images`` images are used, a seeded random sample taken in sorted order so that a
    memory-mapped tensor is read front to back. Sums are accumulated in float64 chunk by chunk, so the
    memory used stays small whatever the image size.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"channel_stats expects uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        raise ValueError("channel_stats needs at least one image")
    if n > max_images:
        generator = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=generator)[:max_images].sort().values
    else:
        idx = torch.arange(n)
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for chunk_idx in idx.split(512):
        chunk = images[chunk_idx].to(torch.float64).div_(255.0)
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = len(idx) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def normalization(source: str, images: torch.Tensor, mean=None, std=None) -> tuple[list[float], list[float]]:
    """The per-channel mean/std to normalise ``images`` of ``source`` with: ``mean``/``std`` when both are
    given, else the data set's known statistics (by its canonical name, matching channel count), else
    computed from ``images`` (:func:`channel_stats`)."""
    if mean is not None and std is not None:
        return list(mean), list(std)
    from byol.data.sources import DATASET_ALIASES

    key = DATASET_ALIASES.get(str(source).lower(), str(source).lower())
    if key in DATASET_STATS and len(DATASET_STATS[key][0]) == images.shape[1]:
        m, s = DATASET_STATS[key]
        return list(m), list(s)
    m, s = channel_stats(images)
    return list(m), list(s)

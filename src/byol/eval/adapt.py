"""Fitting a data set to an encoder: channel count, resolution and normalisation (transfer evaluation).

An encoder pretrained on one data set is evaluated on another (the paper's App. D transfer
protocols, linear and fine-tune). The mismatches are handled explicitly and reported in one line:

- **channels**: grayscale images into an RGB encoder -> the grey channel is repeated 3 times;
  RGB images into a grayscale encoder -> luma ``0.2989 R + 0.587 G + 0.114 B`` (the ITU-R 601
  weights torchvision and the paper's grayscale augmentation use), rounded to uint8.
- **resolution**: images are resized (bilinear, antialiased, by ``eval_transform``) to the
  encoder's input size: its training view size as the run stored it, or an explicit size.
- **normalisation**: the *source* run's mean/std (what the encoder was trained with), converted to
  the encoder's channel count if they were given for another one (see :func:`convert_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from byol.errors import DataError

__all__ = ["LUMA", "Adaptation", "adapt_channels", "convert_stats", "plan_adaptation"]

#: ITU-R BT.601 luma weights (as torchvision's ``rgb_to_grayscale`` and the paper's grayscale op).
LUMA = (0.2989, 0.587, 0.114)


def adapt_channels(images: Tensor, channels: int, *, chunk: int = 8192) -> Tensor:
    """uint8 ``[N, C, H, W]`` -> ``[N, channels, H, W]``: 1->3 repeats, 3->1 takes the luma."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"expected uint8 [N, 1|3, H, W] images, got {images.dtype} {tuple(images.shape)}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
    for s in range(0, images.shape[0], chunk):
        x = images[s : s + chunk].to(torch.float32)
        out[s : s + chunk] = (x * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std converted to ``channels`` entries.

    3 -> 1: the luma of the means, and the luma-weighted std (exact if the channels are perfectly
    correlated, an upper bound otherwise). 1 -> 3: repeated. Same count: unchanged.
    """
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise DataError(f"normalisation mean/std must have 1 or 3 values each, got {mean} / {std}")
    if len(mean) == channels:
        return mean, std
    if channels == 3:
        return mean * 3, std * 3
    if channels == 1:
        return [sum(w * m for w, m in zip(LUMA, mean))], [sum(w * s for w, s in zip(LUMA, std))]
    raise DataError(f"channels must be 1 or 3, got {channels}")


@dataclass(frozen=True)
class Adaptation:
    """What is done to a data set's images before they enter an encoder."""

    data_channels: int
    data_size: int
    encoder_channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats_from: str  #: where mean/std come from (e.g. "the source run's config")
    decoded_size: int | None = None  #: the files were decoded at this size (shorter side + centre crop)

    @property
    def changes(self) -> bool:
        return self.data_channels != self.encoder_channels or self.data_size != self.size or bool(self.decoded_size)

    @property
    def channel_op(self) -> str:
        if self.data_channels == self.encoder_channels:
            return "none"
        return "repeat" if self.encoder_channels == 3 else "luma"

    def message(self, dataset: str) -> str:
        """One line: what conversion is applied."""
        parts = []
        if self.channel_op == "repeat":
            parts.append("grayscale -> RGB by repeating the channel")
        elif self.channel_op == "luma":
            parts.append("RGB -> grayscale by luma (0.2989 R + 0.587 G + 0.114 B)")
        else:
            parts.append(f"{self.data_channels}-channel images as they are")
        if self.decoded_size is not None:
            parts.append(f"decoded at {self.decoded_size} px (shorter side resized, centre crop)")
        if self.data_size != self.size:
            parts.append(f"resized {self.data_size} -> {self.size} px")
        elif self.decoded_size is None:
            parts.append(f"kept at {self.size} px")
        stats = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(self.mean, self.std))
        parts.append(f"normalised with {self.stats_from} mean/std {stats}")
        return f"{dataset}: " + "; ".join(parts)

    def apply(self, images: Tensor) -> Tensor:
        """Channel conversion only (resizing and normalising happen in ``eval_transform``)."""
        return adapt_channels(images, self.encoder_channels)


def plan_adaptation(
    *,
    data_channels: int,
    data_size: int,
    encoder_channels: int,
    size: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    stats_from: str,
    decoded_size: int | None = None,
) -> Adaptation:
    """Decide the conversion of ``data_channels``-channel ``data_size`` px images for an encoder."""
    if encoder_channels not in (1, 3) or data_channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3 (data {data_channels}, encoder {encoder_channels})")
    m, s = convert_stats(mean, std, encoder_channels)
    if any(v <= 0 for v in s):
        raise DataError(f"normalisation std must be positive, got {s}")
    return Adaptation(
        data_channels=int(data_channels),
        data_size=int(data_size),
        encoder_channels=int(encoder_channels),
        size=int(size or data_size),
        mean=tuple(m),
        std=tuple(s),
        stats_from=stats_from,
        decoded_size=decoded_size,
    )

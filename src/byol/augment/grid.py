"""A picture of the view distributions (for ``byol show-views``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from byol.augment.views import TwoViewAugment, eval_transform

__all__ = ["save_view_grid"]


def save_view_grid(
    images: Tensor,
    aug: TwoViewAugment,
    path: str | os.PathLike,
    n_views: int = 8,
    generator: torch.Generator | None = None,
) -> Path:
    """Write a PNG grid: one row per image; column 0 is the original resized to ``aug.size``, then
    ``n_views`` random views alternating T (``aug.spec1``) and T' (``aug.spec2``), de-normalized to [0, 1];
    with multi-crop (``aug.small_crops`` > 0) one more column per small view, drawn at its own size and
    centred on white, so the picture shows how little of the image a small view keeps and at what resolution.

    ``images``: uint8 ``[n, C, H, W]``. Returns the path written.
    """
    from torchvision.utils import save_image  # local import: only needed for this picture

    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    n, C = images.shape[:2]
    mean = torch.tensor(aug.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(aug.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)

    def denorm(x: Tensor) -> Tensor:
        return (x.float() * std + mean).clamp_(0.0, 1.0)

    def on_white(x: Tensor) -> Tensor:  # a small view in the middle of a white view-sized tile
        tile = torch.ones(x.shape[0], C, aug.size, aug.size, dtype=x.dtype, device=x.device)
        top = (aug.size - x.shape[-1]) // 2
        tile[..., top : top + x.shape[-2], top : top + x.shape[-1]] = x
        return tile

    columns = [denorm(eval_transform(images, aug.size, aug.mean, aug.std))]
    small: list[Tensor] = []
    for _ in range((n_views + 1) // 2):
        v1, v2, *extra = aug(images, generator)  # extra: the small views (multi-crop), drawn after the two
        columns += [denorm(v1), denorm(v2)]
        small = small or [on_white(denorm(v)) for v in extra]
    columns = columns[: 1 + n_views] + small
    grid = torch.stack(columns, dim=1).reshape(n * len(columns), C, aug.size, aug.size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid.cpu(), str(path), nrow=len(columns), padding=2, pad_value=1.0)
    return path

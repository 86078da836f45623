"""Random resized crops with per-sample boxes, as one batched resampling (part of :mod:`byol.augment.ops`,
which re-exports these names).

Crop boxes are sampled once and clipped (DeepMind's code), not with torchvision's 10-try rejection loop; they
are continuous (sub-pixel) and resampled with ``grid_sample``, so there is no antialiasing.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sample_crop_boxes", "crop_theta", "resized_crop"]

# ---------------------------------------------------------------------------------------------- crop
def sample_crop_boxes(
    B: int,
    H: int,
    W: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    *,
    uniforms: Tensor | None = None,
    return_draws: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Random crop boxes ``[B, 4]`` as float ``(x0, y0, w, h)`` in pixel units of an ``H x W`` image.

    The box area is ``a * H * W`` with ``a ~ U[scale]`` and the aspect ratio ``w / h = exp(r)`` with
    ``r ~ U[log ratio]``. The box is sampled **once** and each side is then clipped to the image
    (``w <= W``, ``h <= H``), as in the paper's (DeepMind) code. This differs from torchvision's
    ``RandomResizedCrop``, which retries up to 10 times until the box fits and otherwise falls back to a
    centre crop: here large-area / extreme-ratio draws become a full-width (or full-height) box with a
    smaller realised area, instead of being rejected. The position is uniform over the valid positions.

    Boxes are continuous (not rounded to whole pixels); :func:`resized_crop` resamples them exactly.
    Pixel ``i`` covers ``[i, i + 1)``, so a box inside the image satisfies ``0 <= x0``, ``x0 + w <= W``.

    Args:
        uniforms: optional ``[B, 4]`` U[0, 1) draws to use instead of drawing from ``generator``
            (columns: area, log-ratio, x position, y position).
        return_draws: also return the pre-clip draws ``(area_fraction [B], log_ratio [B])``.
    """
    if uniforms is None:
        gdev = generator.device if generator is not None else device
        uniforms = torch.rand(B, 4, generator=generator, device=gdev).to(device)
    u = uniforms.float()
    lo, hi = float(scale[0]), float(scale[1])
    area = lo + (hi - lo) * u[:, 0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    log_r = log_lo + (log_hi - log_lo) * u[:, 1]
    r = torch.exp(log_r)
    total = area * float(H * W)
    w = torch.sqrt(total * r).clamp(max=float(W))
    h = torch.sqrt(total / r).clamp(max=float(H))
    x0 = (float(W) - w) * u[:, 2]
    y0 = (float(H) - h) * u[:, 3]
    boxes = torch.stack([x0, y0, w, h], dim=1)
    if return_draws:
        return boxes, area, log_r
    return boxes


def crop_theta(boxes: Tensor, H: int, W: int, flip_mask: Tensor | None = None) -> Tensor:
    """The ``[B, 2, 3]`` affine map (``F.affine_grid`` convention, ``align_corners=False``) that samples the
    box ``(x0, y0, w, h)`` of an ``H x W`` image, mirrored horizontally where ``flip_mask`` is true.

    Output normalised coordinate ``u`` maps to input ``u * w / W + (2 x0 + w) / W - 1`` (the flip negates the
    ``u`` coefficient), i.e. output pixel ``j`` of ``S`` reads input position ``x0 + (j + 0.5) * w / S``.
    """
    boxes = boxes.to(torch.float32)
    x0, y0, w, h = boxes.unbind(1)
    sx = w / W
    if flip_mask is not None:
        sx = sx * (1.0 - 2.0 * flip_mask.to(device=boxes.device, dtype=torch.float32))
    theta = torch.zeros(boxes.shape[0], 2, 3, device=boxes.device, dtype=torch.float32)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * x0 + w) / W - 1
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = (2 * y0 + h) / H - 1
    return theta


def _axis_aligned_grid(theta: Tensor, out_h: int, out_w: int, dtype: torch.dtype) -> Tensor:
    """``F.affine_grid(theta, [B, C, out_h, out_w], align_corners=False)`` for a theta without rotation or
    shear, built separably: the generic version is a batched matmul over every output pixel, which on
    CPU costs about twice as much as the ``grid_sample`` that follows. Tested equal to ``F.affine_grid``."""
    B = theta.shape[0]
    dev = theta.device
    u = (torch.arange(out_w, device=dev, dtype=torch.float32) * 2.0 + 1.0) / out_w - 1.0  # pixel centres
    v = (torch.arange(out_h, device=dev, dtype=torch.float32) * 2.0 + 1.0) / out_h - 1.0
    gx = theta[:, 0, 0:1] * u.view(1, -1) + theta[:, 0, 2:3]  # [B, out_w]
    gy = theta[:, 1, 1:2] * v.view(1, -1) + theta[:, 1, 2:3]  # [B, out_h]
    grid = torch.empty(B, out_h, out_w, 2, device=dev, dtype=dtype)
    grid[..., 0] = gx.view(B, 1, out_w)
    grid[..., 1] = gy.view(B, out_h, 1)
    return grid


def resized_crop(
    images: Tensor,
    boxes: Tensor,
    size: int | tuple[int, int],
    flip_mask: Tensor | None = None,
    interpolation: str = "bilinear",
) -> Tensor:
    """Crop ``boxes`` (``[B, 4]`` float ``(x0, y0, w, h)``, pixels) from float ``images`` and resize to ``size``.

    One affine sampling grid + one ``F.grid_sample`` (``align_corners=False``) for the whole batch; a
    horizontal flip (``flip_mask``, bool ``[B]``) is folded into the affine map (:func:`crop_theta`) at no
    cost. The grid equals ``F.affine_grid(crop_theta(...))`` but is built separably (crops are axis-aligned).
    Output pixel ``j`` samples the input at continuous position ``x0 + (j + 0.5) * w / size`` (pixel
    centres at ``i + 0.5``), the convention of torchvision / ``F.interpolate(align_corners=False)``, so:

    * an identity box at the input size reproduces the image, and integer-aligned 2x downscales match
      torchvision's ``resized_crop(..., antialias=False)`` exactly;
    * where a sample falls between the crop's edge pixel and the pixel just outside it, ``grid_sample``
      interpolates with the real neighbour, whereas torchvision (which crops first) replicates the edge
      pixel, so upscaled crops differ from torchvision in their outermost output row/column;
    * downscaling a large crop by more than 2x reads only 2x2 input pixels per output pixel (no
      antialiasing), so it aliases. Accepted: at the small sizes this library targets crops are mostly
      upscaled, and the random crop is itself a strong augmentation.

    Samples outside the image (only for boxes that leave it) use border replication.
    """
    if isinstance(size, int):
        size = (size, size)
    B, C, H, W = images.shape
    theta = crop_theta(boxes.to(images.device), H, W, flip_mask)
    grid = _axis_aligned_grid(theta, size[0], size[1], images.dtype)
    out = F.grid_sample(images, grid, mode=interpolation, padding_mode="border", align_corners=False)
    if interpolation == "bicubic":  # bicubic overshoots
        out = out.clamp_(0.0, 1.0)
    return out


# ------------------------------------------------------------------------------------- colour jitter
# Every op takes ``inplace``: the pipeline owns its intermediate tensors and updates them in place. Besides
# saving passes, this matters on CPU: each fresh multi-megabyte temporary can come back from glibc as new
# pages, and the resulting page faults cost more than the arithmetic (measured: 2,500 faults and ~9 ms of
# system time per batch before this change). The public default (``inplace=False``) is pure.

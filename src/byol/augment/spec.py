"""The view distributions T and T' as plain data, and the blur kernel's size.

:class:`ViewSpec`, :func:`paper_views` and :func:`view_specs` live in the torch-free :mod:`byol.config.views`
(the config checks the ``views`` section with them when it loads, and the config layer may not import
torch, which ``byol.augment`` does); they are re-exported here, beside the augmentations that use them.
"""

from __future__ import annotations

import math

from byol.config.views import ViewSpec, paper_views, view_specs

__all__ = ["ViewSpec", "paper_views", "blur_kernel_size", "view_specs"]


def blur_kernel_size(size: int, frac: float) -> int:
    """Odd blur kernel size for an output of ``size`` px: 2*floor(frac*size/2)+1, at least 3.

    224 px -> 23 (the paper's kernel), 96 -> 9, 64 -> 7, 32 -> 3, 28 -> 3. Capped so that the reflect
    padding (k // 2) stays below the image size.
    """
    k = max(3, 2 * int(math.floor(frac * size / 2)) + 1)
    return min(k, 2 * max(int(size), 1) - 1) if size > 1 else 1

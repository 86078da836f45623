"""Augmentations: the paper's view distributions T and T' as data, applied as batched tensor ops.

>>> from byol.augment import TwoViewAugment, paper_views
>>> aug = TwoViewAugment(*paper_views(), size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
>>> v1, v2 = aug(uint8_batch, generator)  # doctest: +SKIP
"""

from byol.augment.grid import save_view_grid
from byol.augment.spec import ViewSpec, paper_views, view_specs
from byol.augment.views import TwoViewAugment, apply_view, eval_transform

__all__ = ["ViewSpec", "paper_views", "view_specs", "TwoViewAugment", "apply_view", "eval_transform", "save_view_grid"]

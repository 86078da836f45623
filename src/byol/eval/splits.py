"""The one seeded class-stratified split behind every held-out set of the evaluation protocols.

Used for the validation split of both linear probes (l2 / learning-rate choice), the test split
carved from a folder that has none, and the validation split held out of a 100% label subset.
One implementation means one definition of "the same split for the same seed" everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from byol.errors import ConfigError

__all__ = ["stratified_split"]


def stratified_split(
    labels: Tensor | np.ndarray, fraction: float, seed: int = 0, *, name: str = "val_fraction"
) -> tuple[Tensor, Tensor]:
    """Seeded class-stratified split of ``range(len(labels))`` into ``(keep, held_out)``, both sorted.

    Each class with ``n_c >= 2`` samples puts ``round(n_c * fraction)`` of them (clamped to
    ``[1, n_c - 1]``) in ``held_out``; a class with a single sample stays in ``keep``. Classes are
    visited in increasing label order, each drawing one permutation from a CPU generator seeded
    with ``seed``, so the split depends only on the labels, ``fraction`` and ``seed``.
    ``name`` is how the caller calls ``fraction`` in the error for a value outside (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{name} must be in (0, 1), got {fraction}")
    y = torch.as_tensor(labels).cpu().to(torch.int64)
    g = torch.Generator().manual_seed(int(seed))
    held = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        n_c = idx.numel()
        if n_c < 2:
            continue
        n_held = min(max(int(round(n_c * fraction)), 1), n_c - 1)
        held.append(idx[torch.randperm(n_c, generator=g)[:n_held]])
    is_held = torch.zeros(y.numel(), dtype=torch.bool)
    if held:
        is_held[torch.cat(held)] = True
    return torch.nonzero(~is_held).flatten(), torch.nonzero(is_held).flatten()

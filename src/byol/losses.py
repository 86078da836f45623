"""Losses as pure tensor functions.

BYOL's loss (Grill et al., Eq. 2 and Algorithm 1): for a prediction p and a target projection z,
``l(p, z) = || p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)``. The symmetric loss adds the two
directions and *then* averages over the batch (summing, not averaging, the two terms matters with
LARS: BYOL_SPEC pitfall 1). The target branch must already be detached by the caller.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The paper's code normalizes with ``x * rsqrt(max(||x||^2, 1e-12))``.
NORM_EPS = 1e-12


def l2_normalize(x: Tensor, eps: float = NORM_EPS) -> Tensor:
    """Row-wise ``x / ||x||`` with the reference implementation's epsilon on the squared norm."""
    sq = (x * x).sum(dim=-1, keepdim=True)
    return x * torch.rsqrt(sq.clamp_min(eps))


def normalized_mse(p: Tensor, z: Tensor) -> Tensor:
    """Per-sample ``||p/||p|| - z/||z|| ||^2`` (= 2 - 2 cos), shape [B]. Computed in float32."""
    p = l2_normalize(p.float())
    z = l2_normalize(z.float())
    return ((p - z) ** 2).sum(dim=-1)


def byol_loss(p1: Tensor, z2: Tensor, p2: Tensor, z1: Tensor) -> Tensor:
    """Symmetric BYOL loss: ``mean_b [ l(p1_b, z2_b) + l(p2_b, z1_b) ]`` (range [0, 8]).

    ``p1`` is the online prediction of view 1, ``z2`` the target projection of view 2, and so on.
    """
    return (normalized_mse(p1, z2) + normalized_mse(p2, z1)).mean()

"""Collapse diagnostics computed on a batch of projections.

For ``d``-dimensional l2-normalized projections spread over the sphere, the per-dimension standard
deviation is about ``1/sqrt(d)``; a collapsed representation (every input mapped to the same point)
has std -> 0 and effective rank -> 1 (Jing et al. / Roy & Vetterli's entropy-based effective rank).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from byol.losses import l2_normalize

#: Warn when the per-dimension std of normalized projections falls below this fraction of 1/sqrt(d).
COLLAPSE_FRACTION = 0.1


@torch.no_grad()
def collapse_stats(z: Tensor) -> dict[str, float]:
    """``z_std`` (mean per-dim std of l2-normalized z), ``z_std_ref`` (= 1/sqrt(d)), ``eff_rank``."""
    z = l2_normalize(z.float())
    d = z.shape[1]
    std = z.std(dim=0).mean().item() if z.shape[0] > 1 else 0.0
    zc = z - z.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(zc)
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum().item()
    return {"z_std": std, "z_std_ref": 1.0 / math.sqrt(d), "eff_rank": math.exp(entropy)}


def is_collapsed(stats: dict[str, float], fraction: float = COLLAPSE_FRACTION) -> bool:
    return stats["z_std"] < fraction * stats["z_std_ref"]


COLLAPSE_ADVICE = (
    "representation collapse suspected: the per-dimension std of the normalized projections is {z_std:.4f} "
    "(healthy is about {z_std_ref:.4f}) and the effective rank is {eff_rank:.1f}. Usual causes: no predictor, "
    "tau_base too low (0 collapses), missing BN in the heads, or an lr far too high for the optimizer "
    "(0.2 is a LARS lr; Adam at that lr collapses)."
)

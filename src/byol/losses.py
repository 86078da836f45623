"""Losses as pure tensor functions.

BYOL's loss (Grill et al., Eq. 2 and Algorithm 1): for a prediction p and a target projection z,
``l(p, z) = || p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)``. The symmetric loss adds the two
directions and *then* averages over the batch (summing, not averaging, the two terms matters with
LARS, whose bias and BN updates are not scale-invariant: the paper, appendix F.5; averaging gave 51.4
against 62.4 linear at 100 epochs in lightly PR 1286). The target branch must already be detached by the caller.

The contrastive losses of the baselines and of BYOL's interpolation toward SimCLR live here too
(:func:`nt_xent`, :func:`info_nce`, :func:`infonce_alpha_beta`). All of them cosine-normalize their
inputs and compute in float32, so they can be fed autocast (fp16/bf16) activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, Eq. 1 and Algorithm 1), averaged over all 2N anchors.

    ``z1[i]`` and ``z2[i]`` are the projections of two views of image i. Each of the 2N projections is an
    anchor whose positive is its twin and whose negatives are the other 2N - 2 projections (itself
    excluded): ``l_a = -log( exp(s_a,pos / T) / sum_{b != a} exp(s_a,b / T) )`` with ``s`` the cosine.
    The caller gathers ``z1``/``z2`` across processes (:func:`byol.runtime.dist.all_gather_with_grad`) so that
    the negatives come from the global batch.
    """
    n = z1.shape[0]
    z = l2_normalize(torch.cat([z1, z2]).float())
    logits = (z @ z.T) / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    twins = torch.arange(2 * n, device=z.device).roll(n)  # anchor a < n pairs with a + n, and back
    return F.cross_entropy(logits, twins)


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE (He et al. 2020, Eq. 1): one positive key per query against a queue of negatives.

    ``q`` [N, d] are the queries and ``k`` [N, d] their positive keys (both cosine-normalized here);
    ``queue`` [K, d] holds normalized negative keys and is used as given (pass a detached copy: the
    caller updates its queue after the loss). The logits of query i are
    ``[q_i.k_i, q_i.queue_1, ..., q_i.queue_K] / T``, the positive at index 0, then cross-entropy.
    """
    q = l2_normalize(q.float())
    k = l2_normalize(k.float())
    positive = (q * k).sum(dim=-1, keepdim=True)
    negatives = q @ queue.float().T
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def infonce_alpha_beta(p: Tensor, t_same: Tensor, t_other: Tensor, temperature: float,
                       negative_weight: float, offset: int = 0) -> Tensor:
    """One direction of BYOL's interpolation toward SimCLR (Grill et al. 2020, App. I, Table 19), *maximized*::

        InfoNCE_{a,b} = 2/B sum_i S(v_i, v'_i)
                        - b * 2a/B sum_i ln( sum_{j != i} exp(S(v_i, v_j) / a) + sum_j exp(S(v_i, v'_j) / a) )

    with ``a`` = ``temperature``, ``b`` = ``negative_weight`` and ``S(u, w)`` the cosine between the online
    output for u (``p``: the prediction, or the projection without predictor) and the target projection
    of w: ``t_same`` for the views v (the same views as ``p``), ``t_other`` for the views v'. The targets may
    be those of a larger (global) batch, ``p`` its rows ``offset, ..., offset + len(p) - 1`` (one process's).
    """
    p = l2_normalize(p.float())
    same = p @ l2_normalize(t_same.float()).T  # S(v_i, v_j)
    other = p @ l2_normalize(t_other.float()).T  # S(v_i, v'_j)
    rows = torch.arange(p.shape[0], device=p.device)
    twin = rows + offset  # the column of row i's own image
    own = torch.zeros_like(same, dtype=torch.bool)
    own[rows, twin] = True
    same = same.masked_fill(own, float("-inf"))  # j != i
    log_partition = torch.logsumexp(torch.cat([same, other], dim=1) / temperature, dim=1)
    return 2.0 * other[rows, twin].mean() - negative_weight * 2.0 * temperature * log_partition.mean()


def byol_infonce_loss(p1: Tensor, t1: Tensor, p2: Tensor, t2: Tensor, temperature: float,
                      negative_weight: float, offset: int = 0) -> Tensor:
    """BYOL's loss with the weighted negative term of App. I, as a loss to minimize, symmetrized like BYOL's.

    ``(2 - InfoNCE_{a,b}(v -> v')) + (2 - InfoNCE_{a,b}(v' -> v))``, ``p1``/``t1`` the online output and
    target projection of view 1, ``p2``/``t2`` of view 2. The constant 2 per direction makes
    ``negative_weight = 0`` equal to :func:`byol_loss` ``(p1, t2, p2, t1)`` (``mean(2 - 2 cos)`` per
    direction), so the scale matches BYOL's; with ``negative_weight = 1``, no predictor and the online
    network as target it is ``4 + 4 a * nt_xent(z1, z2, a)`` (SimCLR's loss, scaled by 4a, plus 4).
    ``offset``: see :func:`infonce_alpha_beta` (targets gathered from every process).
    """
    return (4.0 - infonce_alpha_beta(p1, t1, t2, temperature, negative_weight, offset)
            - infonce_alpha_beta(p2, t2, t1, temperature, negative_weight, offset))

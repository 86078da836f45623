"""DirectPred (Tian, Chen & Ganguli, ICML 2021, "Understanding self-supervised learning dynamics without
contrastive pairs"): BYOL's predictor as a linear map *set* from the statistics of its input rather than
trained by gradient. Equation numbers are the arXiv version's (2102.06810), as the authors' README names them.

The paper's analysis of the learning dynamics has a trained linear predictor W_p align its eigenvectors with
those of the correlation matrix F = E[z z^T] of the online projections, with eigenvalues that go like the
square roots of F's. DirectPred skips the learning: F is estimated by a moving average over steps,
``F <- rho F + (1 - rho) E_B[z z^T]`` (the paper's Eq. 19), decomposed ``F = U diag(s) U^T``, and
``W_p = U diag(p) U^T`` with ``p_j = sqrt(s_j / max_i s_i) + eps`` (Eq. 18: ``sqrt(s_j) / max_i sqrt(s_i) +
eps``; eps boosts the directions of small eigenvalues). W_p is symmetric positive semi-definite (definite for
eps > 0) with eigenvalues in [eps, 1 + eps].

As the authors' code (facebookresearch/luckmatters, ssl/real-dataset/byol_trainer.py): the batch term
averages z z^T over the rows of both views, the first estimate is the first batch's own (no decay from a
zero start), and W_p is recomputed after the optimizer step, every ``every`` steps from the first, so a
step's forward uses the W_p of the previous steps' statistics. Departure: before the first estimate the
predictor is the identity (their first step uses a randomly initialised linear layer, which they then
overwrite); with no trainable parameter there is nothing to initialise at random.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol.runtime.dist import mean_over_ranks


@torch.no_grad()
def directpred_weight(corr: Tensor, eps: float) -> Tensor:
    """``U diag(sqrt(s / max s) + eps) U^T`` of the symmetric ``corr`` = ``U diag(s) U^T`` (Eq. 18).

    Computed in float64 (eigh of a nearly singular F) and symmetrized to the last bit; eigenvalues below 0
    (rounding) count as 0, as in the reference code; an all-zero F (a collapsed representation) gives ``eps I``."""
    s, u = torch.linalg.eigh(corr.double())
    s = s.clamp(min=0.0)
    top = s.max()
    p = (s / top).sqrt() if top > 0 else torch.zeros_like(s)
    w = (u * (p + eps)) @ u.T
    return ((w + w.T) / 2).to(corr.dtype)  # symmetric to the last bit, not only to rounding


class DirectPredictor(nn.Module):
    """The predictor ``p = W z`` with ``W`` set by DirectPred, no trainable parameter.

    ``corr`` (F), ``weight`` (W) and ``updates`` (how many steps F has seen) are buffers, so a checkpoint holds
    them and a resume continues exactly. :meth:`observe` collects the step's projections (every micro-batch
    of an accumulated step, detached); :meth:`update` (the method's ``after_step``, after the optimizer step
    as the reference code) folds their mean ``z z^T`` over the *global* batch into F and recomputes W every
    ``every`` steps. What is collected between two updates is plain state, not a buffer, so DDP's buffer
    broadcast never overwrites a rank's own rows; a checkpoint is taken between steps, when nothing is
    pending. A step the fp16 gradient scaler skips runs no ``after_step``: its rows join the next step's."""

    def __init__(self, dim: int, rho: float, eps: float, every: int) -> None:
        super().__init__()
        self.rho, self.eps, self.every = float(rho), float(eps), int(every)
        self.register_buffer("corr", torch.zeros(dim, dim))
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self._pending: list[Tensor] = []

    def forward(self, z: Tensor) -> Tensor:
        # gradients reach z through the product; W is a buffer and never gets one
        return F.linear(z, self.weight.to(z.dtype))

    @torch.no_grad()
    def observe(self, *zs: Tensor) -> None:
        """Keep the online projections ``zs`` [n, d] of this step for the next :meth:`update`."""
        self._pending.extend(z.detach().float() for z in zs)

    @torch.no_grad()
    def update(self) -> None:
        """F <- the pending rows' ``E[z z^T]`` (first step) or ``rho F + (1 - rho) E[z z^T]`` (Eq. 19); W from F
        at updates 0, every, 2 every, ... A call with nothing pending (no training forward since) is a no-op."""
        if not self._pending:
            return
        z = torch.cat(self._pending)
        self._pending = []
        # sums and the row count in one all-reduce, so ranks of unequal shards weigh each row the same
        moments = torch.cat([(z.T @ z).flatten(), z.new_full((1,), float(z.shape[0]))])
        total = mean_over_ranks(moments)
        batch = total[:-1].view_as(self.corr) / total[-1]
        first = int(self.updates) == 0
        self.corr.copy_(batch if first else self.rho * self.corr + (1.0 - self.rho) * batch)
        if int(self.updates) % self.every == 0:
            self.weight.copy_(directpred_weight(self.corr, self.eps))
        self.updates += 1

"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction").

One shared encoder and projector embed both views; the embeddings are standardized per dimension along the
batch and their cross-correlation matrix ``C`` is pulled toward the identity: the diagonal to 1 (each
dimension invariant to the distortions) and the rest to 0 (no two dimensions redundant). No negatives, no
predictor, no moving-average twin, no stop-gradient: what prevents collapse is the off-diagonal term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from byol.config import MethodConfig
from byol.config.checks import ranged
from byol.methods.registry import BackboneFactory, register
from byol.runtime.dist import sum_over_ranks

#: lambda, the weight of the redundancy-reduction (off-diagonal) term: the reference code's default for
#: ImageNet (Zbontar et al. 2021, section 2, implementation details, and App.: lambda about 5e-3, little
#: sensitivity around it). With an embedding of d dimensions the off-diagonal term has d(d - 1) entries
#: against d on the diagonal, hence a weight of order 1/d.
PUBLISHED_OFF_DIAGONAL_WEIGHT = 0.0051


@dataclass
class BarlowTwinsConfig(MethodConfig):
    """``method:`` of a Barlow Twins run. The projector is ``proj_hidden -> proj_hidden -> proj_dim``."""

    name: str = "barlowtwins"
    proj_hidden: int = ranged(8192)  #: width of the projector's two hidden layers (paper: 8192)
    proj_dim: int = ranged(8192)  #: embedding size d, the side of C (paper: 8192)
    #: lambda, the weight of sum_{i != j} C_ij^2 (paper: 0.0051); 0 keeps the invariance term alone
    off_diagonal_weight: float = ranged(PUBLISHED_OFF_DIAGONAL_WEIGHT, low_ok=True)


def barlow_projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The paper's projector: three linear layers, the first two followed by BN and ReLU (section 2,
    implementation details); as in the reference code the linear layers have no bias (the BN after each
    hidden one has its own, and the embedding is standardized anyway)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim, bias=False),
    )


def cross_correlation(z1n: Tensor, z2n: Tensor) -> Tensor:
    """``C = z1n^T z2n / N`` [d, d] over the *global* batch of standardized embeddings [n, d].

    As the reference code: each process multiplies its own rows and the products are summed over processes
    (:func:`byol.runtime.dist.sum_over_ranks`, differentiable, the identity in one process); the row count
    travels in the same all-reduce, so ranks of unequal shards still divide by the global ``N``.
    """
    d = z1n.shape[1]
    local = z1n.float().T @ z2n.float()
    total = sum_over_ranks(torch.cat([local.flatten(), local.new_full((1,), float(z1n.shape[0]))]))
    return total[:-1].view(d, d) / total[-1]


def barlow_twins_loss(c: Tensor, off_diagonal_weight: float) -> Tensor:
    """``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`` (Zbontar et al. 2021, Eq. 1) of a square ``c``."""
    on = (1.0 - c.diagonal()).pow(2).sum()
    off = c.masked_fill(torch.eye(c.shape[0], dtype=torch.bool, device=c.device), 0.0).pow(2).sum()
    return on + off_diagonal_weight * off


@register("barlowtwins", config=BarlowTwinsConfig)
class BarlowTwins(nn.Module):
    """Barlow Twins over backbones from an injected factory, as the reference code runs it:

    - each view goes through the encoder and projector in its own forward pass (BN statistics per view),
      and the embeddings of each view are standardized by their own ``BatchNorm1d(affine=False)``
      (``self.standardize``, batch statistics; its running statistics are never read);
    - with several processes every BN layer, ``standardize`` included, is cross-replica under
      ``train.sync_bn`` (the default; the reference converts them to SyncBatchNorm) and C is summed over
      processes (:func:`cross_correlation`), so W processes of n images compute the loss of one of W n:
      every process gets the same global loss, and DDP's average of the gradients is its gradient;
    - the standardization, C and the loss are computed in float32, autocast or not;
    - nothing follows by momentum: ``after_step`` has nothing to update.
    """

    def __init__(self, backbone_factory: BackboneFactory, config: BarlowTwinsConfig | None = None) -> None:
        super().__init__()
        c = config or BarlowTwinsConfig()
        self.off_diagonal_weight = float(c.off_diagonal_weight)
        self.encoder = backbone_factory()
        self.projector = barlow_projector(int(self.encoder.feature_dim), c.proj_hidden, c.proj_dim)
        self.standardize = nn.BatchNorm1d(c.proj_dim, affine=False)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector]  # ``standardize`` has no parameters

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        z1 = self.projector(self.encoder(view1))
        z2 = self.projector(self.encoder(view2))
        # C and the loss in float32 under AMP: autocast would run the product in bf16/fp16, whose rounding
        # near 1 (2^-8 in bf16) is the size of what the invariance term (1 - C_ii)^2 measures
        with torch.autocast(z1.device.type, enabled=False):
            c = cross_correlation(self.standardize(z1.float()), self.standardize(z2.float()))
            loss = barlow_twins_loss(c, self.off_diagonal_weight)
        return {"loss": loss, "proj": z1.detach()}

    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        return {}

"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments").

Every view is embedded (encoder, projector, L2-normalised) and scored against K trainable prototypes (unit
vectors). The code of each global view, its soft assignment to the prototypes, is computed *online* by the
Sinkhorn-Knopp algorithm under an equal-partition constraint (each prototype gets 1/K of the batch), and
every other view has to predict it from its own scores: the "swapped prediction" problem (section 3.1). The
equal partition is what prevents collapse: without it (``sinkhorn_iters: 0``, plain softmax codes) every
image can be assigned to the same prototype. No negatives, no predictor, no moving-average twin.

Multi-crop (section 3.2): the codes come from the two global views only and the small views (``views.
small_crops``) predict them. For small batches a queue of earlier global projections enlarges the set the
Sinkhorn partition is computed over (section 4 / App., the small-batch recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol.config import MethodConfig
from byol.config.checks import ranged
from byol.methods.common import projection_head
from byol.methods.registry import BackboneFactory, register
from byol.runtime.dist import sum_over_ranks, world_size

#: The published values (Caron et al. 2020, App. A, implementation details; the reference code's defaults):
#: temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations, 3000 prototypes on ImageNet.
PUBLISHED_TEMPERATURE = 0.1
PUBLISHED_EPSILON = 0.05
PUBLISHED_SINKHORN_ITERS = 3


@dataclass
class SwAVConfig(MethodConfig):
    """``method:`` of a SwAV run. The projector is ``Linear -> BN -> ReLU -> Linear`` (2048 -> 128 in the paper)."""

    name: str = "swav"
    proj_hidden: int = ranged(2048)  #: projector hidden width (paper: 2048)
    proj_dim: int = ranged(128)  #: projection size, the prototypes' dimension (paper: 128)
    prototypes: int = ranged(3000)  #: K, the number of prototypes (paper: 3000 on ImageNet)
    temperature: float = ranged(PUBLISHED_TEMPERATURE)  #: tau of the swapped prediction's softmax (paper: 0.1)
    epsilon: float = ranged(PUBLISHED_EPSILON)  #: the Sinkhorn entropy weight (paper: 0.05)
    #: Sinkhorn-Knopp iterations (paper: 3); 0 = plain softmax codes exp(scores / epsilon), without the
    #: equal-partition constraint (an ablation: the assignments may collapse onto few prototypes)
    sinkhorn_iters: int = ranged(PUBLISHED_SINKHORN_ITERS, low_ok=True)
    queue_length: int = ranged(0, low_ok=True)  #: global projections kept per global view (0: no queue)
    queue_start_step: int = ranged(0, low_ok=True)  #: the optimizer step from which the queue is filled
    #: the prototypes are not updated during the first steps (the reference: the first epoch's iterations)
    freeze_prototypes_steps: int = ranged(0, low_ok=True)


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float, iters: int) -> Tensor:
    """Codes ``Q`` [B, K] of ``scores`` [B, K] (Caron et al. 2020, section 3.1, Eq. 3 and App. A.1; the
    reference code's ``distributed_sinkhorn``), in float32 and without gradient.

    ``exp(scores / epsilon)`` normalised to sum 1, then ``iters`` alternations of: each prototype's total
    weight to 1/K (a row of the paper's K x B matrix), each sample's to 1/B; finally each sample's row sums
    to 1. Under torchrun the sums over the batch are summed over processes, so the partition is over the
    *global* batch (B counts every process's rows), as the reference's all-reduces do. ``iters == 0``: a
    softmax of ``scores / epsilon`` per sample, with no partition constraint."""
    q = scores.float() / epsilon
    if iters == 0:
        return torch.softmax(q, dim=1)
    # scores are cosines (<= 1): shifting by 1 / epsilon, the same on every process, keeps exp finite for any
    # epsilon and cancels in the first normalisation (the reference, at epsilon 0.05, has no shift)
    q = torch.exp(q - 1.0 / epsilon)
    head = sum_over_ranks(torch.stack([q.sum(), q.new_tensor(float(q.shape[0]))]))
    q = q / head[0]
    n_rows, k = float(head[1]), q.shape[1]
    for _ in range(iters):
        q = q / (sum_over_ranks(q.sum(dim=0, keepdim=True)) * k)  # each prototype: 1/K of the global batch
        q = q / (q.sum(dim=1, keepdim=True) * n_rows)  # each sample: 1/B
    return q * n_rows


@torch.no_grad()
def code_entropy(codes: Tensor) -> Tensor:
    """Per-sample entropy of codes [B, K] (rows summing to 1) divided by log K: 1 for a code uniform over the
    prototypes (it says nothing about the image), 0 for a one-hot one. The training monitor reads its mean."""
    q = codes.float()
    return -(q * torch.log(q.clamp_min(1e-12))).sum(dim=1) / math.log(q.shape[1])


def swapped_loss(scores: list[Tensor], codes: list[Tensor], temperature: float) -> Tensor:
    """Each code ``codes[i]`` (of global view i) predicted from every other view's ``scores`` (Eq. 1-2):
    ``-mean_b sum_k q_bk log softmax(s_b / T)_k``, averaged over the other views, then over the codes."""
    total = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        others = [s for v, s in enumerate(scores) if v != i]
        total = total + sum(-(q * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean() for s in others) / len(others)
    return total / len(codes)


@register("swav", config=SwAVConfig)
class SwAV(nn.Module):
    """SwAV over backbones from an injected factory, as the reference code runs it:

    - the views of one resolution go through the encoder and projector in one pass (the two global views
      together, the small views together: BN statistics over those), the projections are L2-normalised;
    - the prototypes (a bias-free linear layer) are L2-normalised in place, without gradient, before each
      forward; during the first ``freeze_prototypes_steps`` steps they get no gradient at all (the
      reference zeroes it), so the optimizer leaves them as they are;
    - the codes (Sinkhorn) and the loss are computed in float32; the codes come from the global views only;
    - with a queue, each process keeps its own global projections (as the reference does per GPU); it is a
      buffer, so it is in the checkpoint and a resume is exact. Under torchrun a checkpoint holds rank 0's
      queue, which every rank starts from on a resume (a departure: the reference saves one per process).
    """

    #: takes small views (``views.small_crops``): ``forward(view1, view2, *small)``
    multi_crop = True

    def __init__(self, backbone_factory: BackboneFactory, config: SwAVConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or SwAVConfig()
        self.encoder = backbone_factory()
        self.projector = projection_head(int(self.encoder.feature_dim), c)
        self.prototypes = nn.Linear(c.proj_dim, c.prototypes, bias=False)
        #: optimizer steps taken (after_step), which the queue's start and the prototypes' freeze read
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue", torch.zeros(2, c.queue_length, c.proj_dim))
        self.register_buffer("queued", torch.zeros((), dtype=torch.long))  #: rows filled so far (<= length)
        with torch.no_grad():
            self.normalize_prototypes()

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector, self.prototypes]

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Each prototype to unit length, in place (the reference does it before every forward)."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w.float(), dim=1).to(w.dtype))

    @property
    def prototypes_frozen(self) -> bool:
        return int(self.steps) < self.config.freeze_prototypes_steps

    def _embed(self, views: tuple[Tensor, ...]) -> Tensor:
        """The L2-normalised projections of same-sized ``views``, in one pass, stacked [len(views) * B, D]."""
        return F.normalize(self.projector(self.encoder(torch.cat(views))).float(), dim=1)

    def forward(self, view1: Tensor, view2: Tensor, *small: Tensor) -> dict[str, Tensor]:
        self.normalize_prototypes()
        b = view1.shape[0]
        z = self._embed((view1, view2))
        if small:
            z = torch.cat([z, self._embed(small)])
        w = self.prototypes.weight
        with torch.autocast(z.device.type, enabled=False):
            frozen = self.prototypes_frozen
            scores = z @ (w.detach() if frozen else w).float().T  # frozen: no gradient reaches them
            views = list(scores.split(b))
            codes = [self._codes(i, views[i].detach(), z[i * b:(i + 1) * b].detach()) for i in range(2)]
            loss = swapped_loss(views, codes, self.config.temperature)
            if frozen and world_size() > 1:
                # DDP needs every trained parameter in the graph: a zero gradient, which with weight decay only
                # rescales each prototype (LARS and SGD move it along itself), undone by the next normalisation
                loss = loss + 0.0 * w.sum()
        # the codes' entropy: a second collapse signal, for the uniform codes the projections' spread misses
        return {"loss": loss, "proj": z[:b].detach(), "code_entropy": code_entropy(codes[0])}

    @torch.no_grad()
    def _codes(self, i: int, scores: Tensor, z: Tensor) -> Tensor:
        """Global view ``i``'s codes: Sinkhorn over its scores, after the queue's once it is full; then its
        projections ``z`` go to the front of the queue (from ``queue_start_step`` on)."""
        c, length = self.config, self.config.queue_length
        if length and int(self.queued) >= length:
            scores = torch.cat([self.queue[i] @ self.prototypes.weight.float().T, scores])
        q = sinkhorn(scores, c.epsilon, c.sinkhorn_iters)[-z.shape[0]:]
        if length and int(self.steps) >= c.queue_start_step:
            self.queue[i] = torch.cat([z.to(self.queue.dtype), self.queue[i]])[:length]
            if i == 1:
                self.queued.fill_(min(length, int(self.queued) + z.shape[0]))
        return q

    @torch.no_grad()
    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        self.steps += 1
        return {}

"""MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines with Momentum
Contrastive Learning"): a momentum key encoder and a queue of negative keys."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from byol.config import MethodConfig
from byol.runtime.dist import all_gather_with_grad
from byol.losses import info_nce, l2_normalize
from byol.methods.common import momentum_twin, momentum_update, projection_head, require, temperature
from byol.methods.registry import BackboneFactory, register

#: MoCo v2's temperature (Chen et al. 2020, "Improved baselines", section 3: tau = 0.2 with the MLP head).
PUBLISHED_TEMPERATURE = 0.2


@register("moco")
class MoCo(nn.Module):
    """MoCo v2: query encoder + projector (trained), key encoder + projector (momentum copies), a queue.

    - **Loss**: InfoNCE (He et al., Eq. 1) of the query of view 1 against the key of view 2 (the
      positive, logit index 0) and the ``queue_size`` keys of earlier batches (the negatives), at
      ``temperature``. The loss is asymmetric, as in MoCo v2 (view 2 never makes a query): one
      query/key pair per image per step.
    - **Queue**: the registered buffers ``queue`` [K, proj_dim] (normalized keys; random unit vectors at
      first, as in MoCo) and ``queue_ptr``, so checkpoints hold them and a resumed run continues exactly.
      The batch's keys are enqueued *after* the loss is computed (the loss reads a copy of the queue from
      before), FIFO: written at the pointer with wrap-around, overwriting the oldest keys. Under a
      process group the keys of every process are enqueued, so all processes keep the same queue.
      Keys are only enqueued in training mode.
    - **Key encoder**: starts as a copy of the query encoder and projector (MoCo copies; ``target_init``
      is not used) and follows them after each optimizer step: ``xi <- m xi + (1 - m) theta`` with a
      constant ``momentum`` m (He et al., Eq. 2).
    - **Shuffling BN** (He et al., section 3.3): with BN, the query and its positive key computed in the
      same batch share batch statistics, a signal the model can use to find the positive instead of
      learning good features. MoCo trains on 8 GPUs, each normalizing its own sub-batch, and shuffles
      the keys across GPUs, so a query and its key are normalized with different samples. The
      single-process equivalent used here is the one of MoCo's official CIFAR demo (SplitBatchNorm):
      the query batch is cut into ``split_bn_groups`` consecutive groups, the key batch is shuffled and
      cut the same way, and each group runs through the network on its own (its own BN statistics, like
      one GPU); the keys are then put back in order. Groups are separate forward passes rather than a
      replaced BN layer, so any injected backbone works unchanged and its state dict keeps its keys.
      ``split_bn_groups: 1`` is plain BN over the batch (the leaky setting, for comparison). Under a
      process group each process shuffles and splits its own batch. The query encoder's BN running
      statistics (used for evaluation) are updated once per group.
    """

    #: with several processes BN stays per process by default (``train.sync_bn``): MoCo's shuffling BN is
    #: per device by design (He et al. section 3.3); byol.train.replicas reads this
    cross_replica_bn = False

    def __init__(self, backbone_factory: BackboneFactory, config: MethodConfig | None = None) -> None:
        super().__init__()
        c = config or MethodConfig()
        self.temperature = temperature(c, PUBLISHED_TEMPERATURE)
        require(c.queue_size >= 1, f"method.queue_size must be a positive number of keys, got {c.queue_size}")
        require(0.0 <= c.momentum <= 1.0, f"method.momentum must be in [0, 1], got {c.momentum}")
        require(c.split_bn_groups >= 1, f"method.split_bn_groups must be a positive integer, got {c.split_bn_groups}")
        self.momentum = float(c.momentum)
        self.groups = int(c.split_bn_groups)
        self.encoder = backbone_factory()
        self.projector = projection_head(int(self.encoder.feature_dim), c, batch_norm=False)
        self.key_encoder = momentum_twin(self.encoder)
        self.key_projector = momentum_twin(self.projector)
        self.queue: Tensor
        self.queue_ptr: Tensor
        self.register_buffer("queue", l2_normalize(torch.randn(c.queue_size, c.proj_dim)))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector]

    def _query(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))

    def _key(self, x: Tensor) -> Tensor:
        return self.key_projector(self.key_encoder(x))

    def _in_groups(self, net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``net`` over ``split_bn_groups`` consecutive groups of ``x``, each with its own BN statistics."""
        if self.groups == 1:
            return net(x)
        return torch.cat([net(part) for part in x.tensor_split(self.groups) if len(part)])

    def _shuffled_keys(self, x: Tensor) -> Tensor:
        """The keys of ``x``, in ``x``'s order, each computed in a BN group of randomly chosen samples."""
        if self.groups == 1:
            return self._key(x)
        perm = torch.randperm(x.shape[0], device=x.device)
        return self._in_groups(self._key, x[perm])[torch.argsort(perm)]

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        q = self._in_groups(self._query, view1)
        with torch.no_grad():
            k = self._shuffled_keys(view2)
        loss = info_nce(q, k, self.queue.detach().clone(), self.temperature)
        if self.training:
            self.enqueue(all_gather_with_grad(l2_normalize(k.float())))
        return {"loss": loss, "proj": q.detach()}

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` [n, d] into the queue at the pointer, wrapping around, and advance the pointer.

        FIFO: the oldest keys are the ones overwritten. With more keys than slots (n > K) the result is
        that of writing all of them in order: the newest K remain and the pointer moves by n (mod K)."""
        size = self.queue.shape[0]
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(n, device=self.queue.device)) % size
        keep = slice(max(0, n - size), n)
        self.queue.index_copy_(0, slots[keep], keys[keep].to(self.queue.dtype))
        self.queue_ptr.fill_((ptr + n) % size)

    @torch.no_grad()
    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        momentum_update([(self.key_encoder, self.encoder), (self.key_projector, self.projector)], self.momentum)
        return {}

"""MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines with Momentum
Contrastive Learning"): a momentum key encoder and a queue of negative keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from byol.config import MethodConfig
from byol.config.checks import ranged
from byol.errors import ConfigError
from byol.runtime import dist
from byol.runtime.dist import all_gather_with_grad
from byol.losses import info_nce, l2_normalize
from byol.methods.common import (decay_field, follow, momentum_twin, projection_head, schedule_field, temperature,
                                 temperature_field)
from byol.methods.registry import BackboneFactory, register

#: MoCo v2's temperature (Chen et al. 2020, "Improved baselines", section 3: tau = 0.2 with the MLP head).
PUBLISHED_TEMPERATURE = 0.2


@dataclass
class MoCoConfig(MethodConfig):
    """``method:`` of a MoCo run (the heads are :class:`~byol.config.MethodConfig`'s).

    The key encoder's momentum m is ``tau_base``, BYOL's name for the same moving average, with
    ``tau_schedule: constant`` (MoCo's; ``cosine`` ramps it to 1 as BYOL and MoCo v3 do). Configs written
    before read ``momentum: m`` as ``tau_base: m`` with the constant schedule (:meth:`read_legacy`).
    """

    LEGACY_KEYS: ClassVar[tuple[str, ...]] = ("momentum",)
    name: str = "moco"
    temperature: float | None = temperature_field()  #: None = PUBLISHED_TEMPERATURE (MoCo v2: 0.2)
    queue_size: int = ranged(65536)  #: negatives in the queue, K (MoCo v2: 65536)
    tau_base: float = decay_field(0.999)  #: the key encoder's momentum m (MoCo v2: 0.999)
    tau_schedule: str = schedule_field("constant")
    #: BN groups of the shuffling BN over all processes (8: MoCo's 8 GPUs, each normalizing its own keys); with
    #: W processes each normalizes split_bn_groups / W groups, so W must divide it
    split_bn_groups: int = ranged(8)

    @classmethod
    def read_legacy(cls, section: dict[str, Any]) -> dict[str, Any]:
        """``momentum: m`` (the name before MoCo shared BYOL's) -> ``tau_base: m``, ``tau_schedule: constant``.
        A section with ``momentum`` was written in the old layout, where ``tau_base`` / ``tau_schedule`` were
        BYOL's alone (MoCo's m was constant): they are replaced, so an old run reads back exactly."""
        if "momentum" not in section:
            return section
        out = {k: v for k, v in section.items() if k not in ("momentum", "tau_base", "tau_schedule")}
        return {**out, "tau_base": section["momentum"], "tau_schedule": "constant"}


@register("moco", config=MoCoConfig)
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
      momentum m = ``tau_base``, constant by default (He et al., Eq. 2; ``tau_schedule``).
    - **Shuffling BN** (He et al., section 3.3): with BN, the query and its positive key computed in the
      same batch share batch statistics, a signal the model can use to find the positive instead of
      learning good features. MoCo trains on 8 GPUs, each normalizing its own sub-batch, and shuffles
      the keys across GPUs, so a query and its key are normalized with different samples. The
      single-process equivalent used here is the one of MoCo's official CIFAR demo (SplitBatchNorm):
      the query batch is cut into ``split_bn_groups`` consecutive groups, the key batch is shuffled and
      cut the same way, and each group runs through the network on its own (its own BN statistics, like
      one GPU); the keys are then put back in order. Groups are separate forward passes rather than a
      replaced BN layer, so any injected backbone works unchanged and its state dict keeps its keys.
      ``split_bn_groups: 1`` is plain BN over the batch (the leaky setting, for comparison). The groups are
      those of the global batch whatever the number of processes W: each process normalizes
      ``split_bn_groups / W`` groups of its part (W must divide ``split_bn_groups``, a one-line error
      otherwise), and the keys are shuffled over the global batch as MoCo shuffles them across GPUs (the
      views gathered, one permutation drawn by rank 0, the keys gathered back and put in order), so the
      loss and gradients do not depend on W. The query encoder's BN running statistics (used for
      evaluation) are updated once per group of the process (rank 0's are the ones saved).
    """

    #: with several processes BN stays per process by default (``train.sync_bn``): MoCo's shuffling BN is
    #: per device by design (He et al. section 3.3); byol.train.replicas reads this
    cross_replica_bn = False

    def __init__(self, backbone_factory: BackboneFactory, config: MoCoConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or MoCoConfig()  # checked when built (its fields' ranges and choices)
        self.temperature = temperature(c, PUBLISHED_TEMPERATURE)
        self.groups = int(c.split_bn_groups)
        self.local_groups = self._groups_per_process(dist.world_size())
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

    def _groups_per_process(self, world: int) -> int:
        if self.groups % world:
            works = world * -(-self.groups // world)  # the next multiple of the world size
            raise ConfigError(f"method.split_bn_groups={self.groups} (MoCo's BN groups over all processes) must be a "
                              f"multiple of the {world} processes, each normalizing split_bn_groups / {world} groups "
                              f"of its part of the batch: e.g. --set method.split_bn_groups={works}")
        return self.groups // world

    def _in_groups(self, net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``net`` over this process's consecutive groups of ``x``, each with its own BN statistics."""
        if self.local_groups == 1:
            return net(x)
        return torch.cat([net(part) for part in x.tensor_split(self.local_groups) if len(part)])

    def _shuffled_keys(self, x: Tensor) -> Tensor:
        """The keys of ``x``, in ``x``'s order, each computed in a BN group of randomly chosen samples of the
        global batch (with one process: of ``x``)."""
        if self.groups == 1:
            return self._key(x)
        batch = dist.gather_rows(x)
        perm = torch.randperm(batch.shape[0], device=x.device)
        if dist.world_size() > 1:  # rank 0's permutation: every rank takes its part of one shuffled batch
            perm = torch.tensor(dist.rank0_values(perm.tolist()), dtype=torch.long, device=x.device)
        mine = dist.shard(batch.shape[0])
        keys = dist.gather_rows(self._in_groups(self._key, batch[perm][mine]))
        return keys[torch.argsort(perm)][mine]

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
        return follow([(self.key_encoder, self.encoder), (self.key_projector, self.projector)], step, total_steps,
                      self.config)

"""The training loop's view of the other processes: DDP, accumulation without sync, and agreed decisions.

With one process every method here is the identity (no wrapper, no collective), so a single-process run
is exactly what it was before multi-process training existed. With ``W`` processes (torchrun):

- the method is wrapped in DDP over its trained modules only (:func:`byol.runtime.parallel.wrap_ddp`),
  its BN layers normalize across ranks when ``sync_bn`` (the paper's cross-replica BN, section 3.3);
- ``optim.batch_size`` is the global batch: each rank takes ``1/W`` of every micro-batch, its loss is the
  mean over its part and DDP averages the gradients, which is the gradient of the global mean;
- decisions that depend on a clock or a signal (the budget's plan, its end, a stop request) are taken
  once and shared, so every rank runs the same number of steps.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from byol.runtime import dist
from byol.train.budget import Plan
from byol.runtime.parallel import convert_sync_bn, wrap_ddp


class Replicas:
    """The processes training one model; ``forward`` is what the loop calls (the method, or its DDP wrapper)
    with every view of a micro-batch, ``forward(view1, view2, *small)``.

    ``sync_bn``: cross-replica BN with more than one process (None: the method's ``cross_replica_bn``
    attribute, True when it has none; MoCo's shuffling BN is per process by design, He et al. section 3.3).
    """

    def __init__(self, method: nn.Module, trained: list[nn.Module], device: torch.device, *,
                 sync_bn: bool | None = None) -> None:
        self.rank, self.world = dist.rank(), dist.world_size()
        self.forward: nn.Module = method
        self.sync_bn = False
        if self.world > 1:
            self.sync_bn = bool(getattr(method, "cross_replica_bn", True) if sync_bn is None else sync_bn)
            if self.sync_bn:
                convert_sync_bn(method, device)
            self.forward = wrap_ddp(method, trained, device, broadcast_buffers=not self.sync_bn)

    @property
    def shard(self) -> tuple[int, int]:
        """(this rank, number of ranks): which part of each global micro-batch this process takes."""
        return self.rank, self.world

    def no_sync(self, accumulating: bool) -> Any:
        """DDP's ``no_sync`` for a micro-batch that is not the last of an optimizer step (its gradients
        stay local and are averaged with the last one's)."""
        if accumulating and self.world > 1:
            return self.forward.no_sync()  # type: ignore[operator]
        return nullcontext()

    def mean(self, x: Tensor) -> Tensor:
        """``x`` (detached) averaged over ranks: the loss of the global batch."""
        return dist.mean_over_ranks(x.detach())

    def gather(self, x: Tensor) -> Tensor:
        """Every rank's rows of ``x`` (e.g. the projections the collapse monitor reads), in rank order."""
        return dist.gather_rows(x.detach())

    def plan(self, plan: Plan) -> Plan:
        """Rank 0's plan: the budget planner's decisions are made on rank 0 and shared."""
        if self.world == 1:
            return plan
        mine = dataclasses.asdict(plan)
        values = dist.rank0_values([float(v) for v in mine.values()])
        return Plan(**{k: v if isinstance(mine[k], float) else int(round(v)) for k, v in zip(mine, values)})

    def agree(self, exhausted: bool, stop_requested: bool) -> tuple[bool, bool]:
        """(rank 0's "the budget is used up", "some rank was asked to stop"): one collective per step."""
        return dist.agree(exhausted, stop_requested)


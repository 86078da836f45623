"""Distributed helpers that also work without a process group (single process = rank 0 of 1).

Everything rank-aware (logging, checkpoint writes, progress bars) asks here, so torchrun/DDP can drop
in without global state elsewhere. Multi-process training itself does not exist yet: the engine refuses
a world size above 1.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every rank concatenated along dim 0 (rank order), differentiable; ``x`` itself in a single process.

    Contrastive losses take their negatives from the whole global batch (SimCLR, Chen et al. 2020,
    section 2.1: the other 2(N-1) views of the minibatch). The gathered copies carry gradients: backward
    sums each rank's gradient for its slice over ranks, so a loss computed identically on every rank, once
    DDP averages the gradients, has the gradient of the same loss computed in one process over the whole
    batch. All ranks must pass tensors of the same shape.
    """
    if not is_initialized() or world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)

"""Distributed helpers that also work without a process group (single process = rank 0 of 1).

Everything rank-aware (logging, checkpoint writes, progress bars) asks here, so torchrun/DDP can drop
in without global state elsewhere.
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


def barrier() -> None:
    if is_initialized():
        tdist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a no-op copy in a single process)."""
    if not is_initialized():
        return x
    y = x.clone()
    tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
    return y / world_size()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]

"""Distributed helpers that also work without a process group (single process = rank 0 of 1).

Everything rank-aware (logging, checkpoint writes, progress bars) asks here, so torchrun/DDP can drop
in without global state elsewhere. Multi-process training itself does not exist yet: the engine refuses
a world size above 1.
"""

from __future__ import annotations

import torch.distributed as tdist


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0

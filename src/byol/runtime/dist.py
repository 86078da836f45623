"""Distributed helpers that also work without a process group (single process = rank 0 of 1).

Everything rank-aware (logging, checkpoint writes, progress bars, the budget's decisions) asks here, so
the rest of the library never holds global distributed state. A process group is created only from
torchrun's environment (``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``):
NCCL when training on CUDA, gloo otherwise. With one process every helper is the identity and no
collective runs, so single-process results are unchanged. Layer 0: imports only torch and the stdlib.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as tdist
from torch import Tensor, nn


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


# -- torchrun's environment ----------------------------------------------------------------------
def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when the process was not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """``RANK`` as torchrun sets it (0 without it): whether this process prints, before and after the group."""
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def local_device(device: torch.device) -> torch.device:
    """``device`` with this process's GPU: under torchrun a bare ``cuda`` is ``cuda:LOCAL_RANK`` (made current)."""
    if device.type == "cuda" and device.index is None and env_world_size() > 1:
        device = torch.device("cuda", local_rank())
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[bool]:
    """Join torchrun's process group for the block (NCCL on CUDA, gloo elsewhere); yields whether one is up.

    No-op with one process or when a group already exists (then its owner destroys it)."""
    created = False
    if env_world_size() > 1 and not is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend=backend, init_method="env://")
        created = True
    try:
        yield is_initialized()
    finally:
        if created and is_initialized():
            tdist.destroy_process_group()


def _coll_device() -> torch.device:
    """Where collective buffers live: the current GPU with NCCL, else the CPU."""
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. decoding a data set into its cache), the other ranks after it.

    A failure leaves every rank with the same error: when rank 0's block raises, the other ranks raise its
    error without running the block; when another rank's raises, every rank raises the first failing rank's
    (so no rank goes on alone to a collective the others never reach). With one process: just the block."""
    if world_size() == 1:
        yield
        return
    if not is_main():
        first = _rank0_object(None)
        if first is not None:
            raise first
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised here too
        mine: BaseException | None = exc
    else:
        mine = None
    if is_main():
        _rank0_object(_portable(mine))
        if mine is not None:
            raise mine
    failed = [e for e in all_objects(_portable(mine)) if e is not None]
    if mine is not None:
        raise mine
    if failed:
        raise failed[0]


def _portable(exc: BaseException | None) -> BaseException | None:
    """``exc`` as it can travel to another process: itself when it pickles, else a RuntimeError with its text."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not survive pickling
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _rank0_object(obj: object) -> object:
    """Rank 0's ``obj`` (any picklable value) on every rank."""
    box = [obj]
    tdist.broadcast_object_list(box, src=0)  # torch stages it on the current GPU with NCCL
    return box[0]


def all_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (any picklable value), in rank order (``[obj]`` with one process)."""
    if world_size() == 1:
        return [obj]
    out: list[object] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


# -- agreement: every rank takes the same decision -----------------------------------------------
def rank0_values(values: Sequence[float]) -> list[float]:
    """Rank 0's ``values`` on every rank (float64: integers below 2**53 survive exactly)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_coll_device())
    tdist.broadcast(t, src=0)
    return t.tolist()


def agree(rank0_flag: bool, any_flag: bool) -> tuple[bool, bool]:
    """(rank 0's ``rank0_flag``, whether any rank's ``any_flag`` is set), one collective."""
    if world_size() == 1:
        return rank0_flag, any_flag
    t = torch.tensor([float(rank0_flag and is_main()), float(any_flag)], dtype=torch.float64, device=_coll_device())
    tdist.all_reduce(t)
    return bool(t[0] > 0), bool(t[1] > 0)


def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of ``x`` over ranks (no gradient): e.g. a loss logged for the global batch."""
    if world_size() == 1:
        return x
    t = x.detach().to(_coll_device(), torch.float64)
    tdist.all_reduce(t)
    return (t / world_size()).to(x.device, x.dtype)


# -- data across ranks ---------------------------------------------------------------------------
def gather_rows(x: Tensor) -> Tensor:
    """Every rank's ``x`` [n_r, ...] concatenated in rank order (no gradient; the ``n_r`` may differ)."""
    if world_size() == 1:
        return x
    dev = _coll_device()
    n = torch.tensor([x.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    tdist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    padded = torch.zeros((max(counts), *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    tdist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(x.device)


def shard(n: int) -> slice:
    """This rank's contiguous part of ``n`` items (sizes differ by at most one, as ``tensor_split``)."""
    w, r = world_size(), rank()
    q, rest = divmod(n, w)
    start = r * q + min(r, rest)
    return slice(start, start + q + (1 if r < rest else 0))


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers in ``module`` on every rank (in place)."""
    if world_size() == 1:
        return
    dev = _coll_device()
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            buf = t.detach().to(dev)
            tdist.broadcast(buf, src=0)
            t.copy_(buf.to(t.device))


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is again the sum over ranks: ``y = sum_r x_r`` on every rank, so
    ``dL/dx_r = sum_s dL_s/dy`` (each rank's loss depends on every rank's input)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = x.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        g = grad.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(g)
        return g


def sum_over_ranks(x: Tensor) -> Tensor:
    """Differentiable sum of ``x`` over ranks (``x`` itself in a single process)."""
    if world_size() == 1:
        return x
    return _SumOverRanks.apply(x)


def all_gather_with_grad(x: Tensor) -> Tensor:
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

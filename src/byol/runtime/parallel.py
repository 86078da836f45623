"""Data-parallel training over processes: cross-replica batch norm and the DDP wrapper of a method.

The paper trains on 512 TPU cores with a global batch of 4096 and computes the batch-norm statistics
across all replicas (Grill et al. 2020, section 3.3 and appendix B: "batch normalization statistics are
computed across all devices"). With several processes each BN layer here therefore normalizes with the
mean and variance of the *global* (micro-)batch. BN statistics stay per view: BYOL runs each view through
the networks in its own forward pass (:class:`byol.methods.BYOL`), so each view's global batch is
normalized separately, as in the reference code.

On CUDA, torch's ``nn.SyncBatchNorm`` (fused kernels, NCCL) does this. torch's layer refuses CPU tensors,
so on other devices :class:`CrossReplicaBatchNorm` computes the same statistics with two differentiable
all-reduces (gloo); the tests of multi-process training run on it.
"""

from __future__ import annotations

import inspect
from itertools import chain

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from byol.runtime import dist


class CrossReplicaBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch over all ranks (any device, gloo).

    ``mean = sum_r sum_i x / N`` and ``var = sum_r sum_i (x - mean)^2 / N`` (biased, as BN normalizes;
    the running variance gets the unbiased ``N / (N - 1)`` one), ``N`` the global count. Both sums are
    all-reduced with gradients (:func:`byol.runtime.dist.sum_over_ranks`), so the backward pass is that of one BN
    over the global batch. Without a process group, or in eval mode, it is ordinary batch norm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input [N, C, ...], got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and dist.world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_full((1,), float(x.numel() // x.shape[1]))])
        total = dist.sum_over_ranks(local)
        n = total[-1]
        mean = total[:-1] / n
        xc = x - mean.view(shape)
        var = dist.sum_over_ranks((xc * xc).sum(dims)) / n
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        return y.to(input.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)  # type: ignore[union-attr]
        self.running_var.mul_(1 - m).add_(unbiased_var.to(self.running_var.dtype), alpha=m)  # type: ignore[union-attr]


def _cross_replica(bn: _BatchNorm) -> CrossReplicaBatchNorm:
    out = CrossReplicaBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    # the same Parameter and buffer objects: an optimizer built before the conversion still holds them
    out.weight, out.bias = bn.weight, bn.bias
    out.running_mean, out.running_var, out.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    out.training = bn.training
    return out


def convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BN layer of ``module`` normalizing across ranks, in place (same parameters, same state-dict keys):
    torch's ``SyncBatchNorm`` on CUDA, :class:`CrossReplicaBatchNorm` elsewhere. Returns ``module``."""
    if device.type == "cuda":
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if converted is not module:
            raise ValueError("a bare BatchNorm layer cannot be converted in place")
        return module
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, CrossReplicaBatchNorm):
            setattr(module, name, _cross_replica(child))
        else:
            convert_sync_bn(child, device)
    return module


def wrap_ddp(method: nn.Module, trained: list[nn.Module], device: torch.device, *, broadcast_buffers: bool
             ) -> DistributedDataParallel:
    """``method`` in DDP over the parameters and buffers of ``trained`` only (its ``trainable_modules()``).

    The rest (BYOL's target, MoCo's key encoder and queue) is left out of DDP: it is broadcast once from
    rank 0 here and afterwards moves the same way on every rank (an EMA of identical online weights).
    ``broadcast_buffers``: DDP copies rank 0's BN running statistics of the trained modules before every
    forward (needed only without cross-replica BN, when each rank's statistics differ)."""
    dist.broadcast_module(method)
    mine = {id(t) for m in trained for t in chain(m.parameters(), m.buffers())}
    ignore = [n for n, t in chain(method.named_parameters(), method.named_buffers()) if id(t) not in mine]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(method, ignore)
    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(method, device_ids=ids, **_buffer_sync(broadcast_buffers))


def _buffer_sync(each_forward: bool) -> dict[str, bool]:
    """DDP's argument for copying rank 0's buffers before each forward: ``forward_sync_buffers`` where torch has
    it (it deprecates ``broadcast_buffers`` with a FutureWarning in every process), else ``broadcast_buffers``.
    The new one also copies them once at start, which changes nothing here: :func:`wrap_ddp` just did."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": each_forward}
    return {"broadcast_buffers": each_forward}


__all__ = ["CrossReplicaBatchNorm", "convert_sync_bn", "wrap_ddp"]

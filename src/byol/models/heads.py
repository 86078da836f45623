"""Projector / predictor heads and the EMA update."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """The paper's head: ``Linear(+bias) -> BN -> ReLU -> Linear(no bias)``, no output BN.

    BN in the heads is essential: a port without it did no better than random init (imbue-ai/self_supervised
    issue 5; Richemond et al. 2020, arXiv 2010.10241: with no BN anywhere BYOL collapses).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
        )
        self.out_dim = out_dim


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``xi <- tau * xi + (1 - tau) * theta`` over *every* parameter, biases and BN affine included.

    Buffers (BN running statistics) are not averaged: the target runs in training mode and uses batch
    statistics, so its running stats are never read (as in the reference implementation). Biases are averaged
    too; lightning-bolts issue 440 found them skipped in a port.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise RuntimeError("target and online networks have different parameter lists")
    torch._foreach_lerp_(t_params, o_params, 1.0 - tau)

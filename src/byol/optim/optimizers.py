"""Optimizers: LARS (as in the BYOL reference code), SGD and AdamW, with the paper's parameter groups.

Parameter groups: biases and normalization parameters (every tensor with ndim <= 1) are excluded from
weight decay *and* from LARS trust-ratio scaling (Grill et al. 2020, section 3.3 and appendix B). 0.2 is a
LARS learning rate: Adam at that rate collapses (lucidrains/byol-pytorch issue 44).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.optim import Optimizer

from byol.errors import ConfigError


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling, the variant of the BYOL reference implementation.

    Per parameter ``w`` with gradient ``g``::

        u = g + wd * w                      (wd = 0 for excluded parameters)
        trust = eta * ||w|| / ||u||         (1 where excluded, or where either norm is 0)
        m = momentum * m + trust * u
        w = w - lr * m

    Note the trust ratio multiplies the update *before* momentum, and lr is applied outside it.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
        lars_exclude: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"invalid lr {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=lars_exclude)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, eta, mom, lr = group["weight_decay"], group["eta"], group["momentum"], group["lr"]
            exclude = group["lars_exclude"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if wd != 0 and not exclude:
                updates = torch._foreach_add(grads, params, alpha=wd)
            else:
                updates = [g.clone() for g in grads]
            if not exclude:
                w_norms = torch._foreach_norm(params)
                u_norms = torch._foreach_norm(updates)
                trusts = [
                    torch.where((wn > 0) & (un > 0), eta * wn / un.clamp_min(1e-30), torch.ones_like(wn))
                    for wn, un in zip(w_norms, u_norms)
                ]
                torch._foreach_mul_(updates, trusts)
            bufs = []
            for p, u in zip(params, updates):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, mom)
            torch._foreach_add_(bufs, updates)
            torch._foreach_add_(params, bufs, alpha=-lr)
        return loss


def param_groups(modules: Iterable[nn.Module], weight_decay: float,
                 lr_mult: Mapping[nn.Module, float] | None = None, fixed_lr: Iterable[nn.Module] = (),
                 lr: float = 0.0) -> list[dict]:
    """Split parameters into (weights: decayed, LARS-adapted) and (biases/norm params: neither).

    ``lr_mult``: modules whose parameters train at a multiple of the scheduled lr (e.g. BYOL's predictor):
    they get groups of their own with an ``lr_mult`` key that :func:`set_lr` applies. ``fixed_lr``: modules
    whose lr is not scheduled but held at the peak ``lr`` (times their ``lr_mult``) from the first step to the
    last (SimSiam's predictor, Chen & He 2021, section 4.2): groups with a ``fixed_lr`` key. The first group
    is always the plain weights, whose lr is the scheduled one (what the loop logs)."""
    mults = {id(p): m for mod, m in (lr_mult or {}).items() for p in mod.parameters() if m != 1.0}
    fixed = {id(p) for mod in fixed_lr for p in mod.parameters()}
    groups: dict[tuple[float, bool, bool], list] = {(1.0, False, True): [], (1.0, False, False): []}
    seen: set[int] = set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            groups.setdefault((mults.get(id(p), 1.0), id(p) in fixed, p.ndim > 1), []).append(p)
    out = []
    for (mult, held, decayed), params in groups.items():
        group = {"params": params, "weight_decay": weight_decay if decayed else 0.0, "lars_exclude": not decayed}
        if mult != 1.0:
            group["lr_mult"] = mult
        if held:
            group["fixed_lr"] = lr * mult
        if params or (mult == 1.0 and not held):
            out.append(group)
    return out


OPTIMIZERS = ("lars", "sgd", "adamw")


def build_optimizer(
    name: str,
    modules: Iterable[nn.Module],
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    lr_mult: Mapping[nn.Module, float] | None = None,
    fixed_lr: Iterable[nn.Module] = (),
) -> Optimizer:
    """Build an optimizer over ``modules`` with the bias/BN exclusion groups. ``lr`` is the peak lr;
    ``lr_mult`` and ``fixed_lr`` as in :func:`param_groups`."""
    groups = param_groups(modules, weight_decay, lr_mult, fixed_lr, lr)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=eta)
    # torch optimizers ignore the extra 'lars_exclude' key in the groups.
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """The scheduled ``lr`` on every group, times the group's ``lr_mult`` where it has one; a ``fixed_lr`` group
    keeps its own."""
    for group in optimizer.param_groups:
        group["lr"] = group["fixed_lr"] if "fixed_lr" in group else lr * group.get("lr_mult", 1.0)

"""What the methods share: the projection head, networks that follow another by a moving average, and the
config fields of those shared concepts.

BYOL's target and MoCo's key encoder are the same construction (a frozen twin of the online network,
moved toward it after each optimizer step by ``xi <- tau xi + (1 - tau) theta``), so both sections name its
decay ``tau_base`` with a ``tau_schedule`` (:func:`decay_field`, :func:`follow`); only the defaults differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from byol.config import MethodConfig
from byol.config.checks import choice, ranged
from byol.models.heads import MLP, ema_update
from byol.optim.schedules import TAU_SCHEDULES, target_tau


def decay_field(default: float) -> Any:
    """``tau_base``: the twin's moving-average decay tau in [0, 1] (the start of a cosine ``tau_schedule``)."""
    return ranged(default, 0, 1, low_ok=True)


def schedule_field(default: str) -> Any:
    """``tau_schedule``: ``cosine`` (tau_base -> 1, BYOL's) or ``constant`` (tau_base throughout, MoCo's)."""
    return choice(default, *TAU_SCHEDULES)


def temperature_field() -> Any:
    """``temperature``: positive, or None for the method's published value (:func:`temperature`)."""
    return ranged(None)


def projection_head(in_dim: int, config: MethodConfig, *, batch_norm: bool = True) -> nn.Module:
    """The projector ``in_dim -> method.proj_hidden -> method.proj_dim``.

    ``batch_norm=True``: BYOL's MLP, ``Linear -> BN -> ReLU -> Linear``; SimCLR's projector
    ``g(h) = W2 ReLU(W1 h)`` (Chen et al. 2020, section 2.1) is the same MLP, whose hidden layer its
    reference code also batch-normalizes. ``batch_norm=False``: MoCo v2's head, ``Linear -> ReLU -> Linear``
    (Chen et al. 2020, "Improved baselines": a 2-layer MLP head, 2048-d hidden layer with ReLU, no BN).
    """
    if batch_norm:
        return MLP(in_dim, config.proj_hidden, config.proj_dim)
    return nn.Sequential(nn.Linear(in_dim, config.proj_hidden), nn.ReLU(inplace=True),
                         nn.Linear(config.proj_hidden, config.proj_dim))


def momentum_twin(online: nn.Module, fresh: Callable[[], nn.Module] | None = None) -> nn.Module:
    """A network that follows ``online`` by momentum: a deep copy of it, or ``fresh()`` (its own random
    initialisation); its parameters never require gradients, so no optimizer step can reach them."""
    twin = copy.deepcopy(online) if fresh is None else fresh()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def momentum_update(pairs: Iterable[tuple[nn.Module, nn.Module]], m: float) -> None:
    """``twin <- m * twin + (1 - m) * online`` for every ``(twin, online)`` pair, over every parameter.

    ``m = 1`` leaves the twins untouched, bit for bit (a never-updated target, Grill et al. 2020, Table 5a)."""
    if m == 1.0:
        return
    for twin, online in pairs:
        ema_update(twin, online, m)


def temperature(config: Any, published: float) -> float:
    """``method.temperature``, or the method's ``published`` default when it is unset (None)."""
    return float(published if config.temperature is None else config.temperature)


@torch.no_grad()
def follow(pairs: Iterable[tuple[nn.Module, nn.Module]], step: float, total_steps: int, config: Any) -> dict[str, float]:
    """Move each twin toward its online network by tau of ``config.tau_base`` / ``config.tau_schedule`` at
    ``step`` of ``total_steps`` (:func:`byol.optim.schedules.target_tau`); ``{"tau": tau}``, for the log and bar."""
    tau = target_tau(step, total_steps, config.tau_base, config.tau_schedule)
    momentum_update(pairs, tau)
    return {"tau": tau}

"""What the methods share: the projection head, networks that follow another by momentum, config checks.

BYOL's target and MoCo's key encoder are the same construction (a frozen twin of the online network,
moved toward it after each optimizer step by ``xi <- m xi + (1 - m) theta``); only the schedule of m differs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from byol.config import MethodConfig
from byol.errors import ConfigError
from byol.models.heads import MLP, ema_update


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


def require(ok: bool, message: str) -> None:
    """Raise a one-line :class:`~byol.errors.ConfigError` with ``message`` (which names the key) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def one_of(config: MethodConfig, key: str, allowed: Sequence[str]) -> str:
    """``config.<key>``, checked against ``allowed``."""
    value = getattr(config, key)
    require(value in allowed, f"method.{key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def temperature(config: MethodConfig, published: float) -> float:
    """``method.temperature``, or the method's ``published`` default when it is unset (None)."""
    t = published if config.temperature is None else config.temperature
    require(t > 0, f"method.temperature must be positive, got {t}")
    return float(t)

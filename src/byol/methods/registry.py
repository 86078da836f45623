"""Methods by name: the engine and the CLI know a method only through this registry.

A method class is registered with :func:`register` together with its config section, a dataclass
extending :class:`~byol.config.MethodConfig` (``@register("byol", config=BYOLConfig)``), and built with one
constructor signature, ``cls(backbone_factory, config)``: ``backbone_factory()`` returns a freshly
initialised backbone (a method that needs a twin, such as BYOL's target or MoCo's key encoder, calls it
again), and ``config`` is the run's section of that class, already checked (its fields declare their
ranges and choices, :mod:`byol.config.checks`). :mod:`byol.train.config` reads ``method.name`` and parses
the section with the class registered here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from byol.config import MethodConfig
from byol.config.checks import did_you_mean
from byol.errors import ConfigError

BackboneFactory = Callable[[], nn.Module]

METHODS: dict[str, type[nn.Module]] = {}
#: ``name -> config section class`` of every registered method
CONFIGS: dict[str, type[MethodConfig]] = {}

#: ``method.name`` when a config names none
DEFAULT_METHOD = "byol"


def register(name: str, config: type[MethodConfig] = MethodConfig) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a method available as ``method.name: <name>``, configured by ``config`` (a
    dataclass extending MethodConfig whose ``name`` defaults to ``name``)."""
    if config is not MethodConfig and config.name != name:  # the dataclass default, a class attribute
        raise ValueError(f"{config.__name__}.name defaults to {config.name!r}, not the registered {name!r}")

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered ({METHODS[name].__name__})")
        METHODS[name] = cls
        CONFIGS[name] = config
        return cls

    return add


def method_names() -> list[str]:
    return sorted(METHODS)


def _known(name: str) -> None:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r} (method.name){did_you_mean(str(name), method_names())}; "
                          f"available: {', '.join(method_names())}")


def method_class(name: str) -> type[nn.Module]:
    """The class registered as ``name`` (ConfigError naming the available ones)."""
    _known(name)
    return METHODS[name]


def config_class(name: str) -> type[MethodConfig]:
    """The config section class of the method registered as ``name`` (ConfigError naming the available ones)."""
    _known(name)
    return CONFIGS[name]


def section_keys() -> set[str]:
    """Every key some registered method's section has, or reads as an older name (``LEGACY_KEYS``)."""
    return {k for c in CONFIGS.values() for k in (*(f.name for f in dataclasses.fields(c)), *c.LEGACY_KEYS)}


def check_multi_crop(name: str, small_crops: int) -> None:
    """ConfigError unless the method ``name`` takes small views when ``views.small_crops`` > 0: its class says
    so with ``multi_crop = True`` (its ``forward(view1, view2, *small)``)."""
    if small_crops and not getattr(method_class(name), "multi_crop", False):
        able = ", ".join(n for n in method_names() if getattr(METHODS[n], "multi_crop", False))
        raise ConfigError(f"views.small_crops={small_crops}: method {name!r} takes no small views; the methods "
                          f"that do: {able} (or set views.small_crops=0)")


def build_method(config: MethodConfig, backbone_factory: BackboneFactory) -> nn.Module:
    """The method ``config.name`` over backbones from ``backbone_factory``."""
    return method_class(config.name)(backbone_factory, config)

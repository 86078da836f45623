"""Methods by name: the engine and the CLI know a method only through this registry.

A method class is registered with :func:`register` and built with one constructor signature,
``cls(backbone_factory, config)``: ``backbone_factory()`` returns a freshly initialised backbone (a
method that needs a twin, such as BYOL's target or MoCo's key encoder, calls it again), and ``config``
is the run's :class:`~byol.config.MethodConfig`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from byol.config import MethodConfig
from byol.errors import ConfigError

BackboneFactory = Callable[[], nn.Module]

METHODS: dict[str, type[nn.Module]] = {}


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a method available as ``method.name: <name>``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered ({METHODS[name].__name__})")
        METHODS[name] = cls
        return cls

    return add


def method_names() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type[nn.Module]:
    """The class registered as ``name`` (ConfigError naming the available ones)."""
    cls = METHODS.get(name)
    if cls is None:
        raise ConfigError(f"unknown method {name!r} (method.name); available: {', '.join(method_names())}")
    return cls


def build_method(config: MethodConfig, backbone_factory: BackboneFactory) -> nn.Module:
    """The method ``config.name`` over backbones from ``backbone_factory``."""
    return method_class(config.name)(backbone_factory, config)

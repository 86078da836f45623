"""Self-supervised methods over an injected backbone, known to the engine and CLI by name
(:data:`METHODS`, :func:`build_method`). Importing this package registers every method."""

from byol.methods.base import Method
from byol.methods.byol import BYOL
from byol.methods.moco import MoCo
from byol.methods.registry import METHODS, BackboneFactory, build_method, method_names, register
from byol.methods.simclr import SimCLR

__all__ = ["METHODS", "BYOL", "BackboneFactory", "Method", "MoCo", "SimCLR", "build_method", "method_names",
           "register"]

"""Self-supervised methods over an injected backbone, known to the engine and CLI by name
(:data:`METHODS`, :func:`build_method`), each with its own config section (:data:`CONFIGS`). Importing this
package registers every method: a new method is one module here and its import line below."""

from byol.methods.barlowtwins import BarlowTwins, BarlowTwinsConfig  # noqa: F401 (registers it)
from byol.methods.base import Method
from byol.methods.byol import BYOL, BYOLConfig
from byol.methods.moco import MoCo, MoCoConfig
from byol.methods.registry import (CONFIGS, METHODS, BackboneFactory, build_method, config_class, method_names,
                                   register)
from byol.methods.simclr import SimCLR, SimCLRConfig
from byol.methods.simsiam import SimSiam, SimSiamConfig  # noqa: F401 (registers "simsiam")
from byol.methods.swav import SwAV, SwAVConfig  # noqa: F401 (registers "swav")

__all__ = ["CONFIGS", "METHODS", "BYOL", "BYOLConfig", "BackboneFactory", "Method", "MoCo", "MoCoConfig", "SimCLR",
           "SimCLRConfig", "build_method", "config_class", "method_names", "register"]

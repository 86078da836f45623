"""Self-supervised methods over an injected backbone."""

from byol.methods.base import Method
from byol.methods.byol import BYOL

__all__ = ["Method", "BYOL"]

"""The ``byol`` command line."""

from byol.cli.main import main

__all__ = ["main"]

"""``python -m byol`` and ``torchrun -m byol``: the ``byol`` command.

``torchrun -m byol.cli.main`` works too, but runpy then warns (the module is already imported by its
package ``byol.cli`` when it is run), once per process.

This module is the command line's second entry point (the first is the ``byol`` script): it belongs to the
CLI layer (tests/test_layers.py) and no library module imports it."""

import sys

from byol.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

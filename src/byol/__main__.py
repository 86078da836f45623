"""``python -m byol`` and ``torchrun -m byol``: the ``byol`` command.

``torchrun -m byol.cli.main`` works too, but runpy then warns (the module is already imported by its
package ``byol.cli`` when it is run), once per process."""

import sys

from byol.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

"""The augmentation tests build the fused CPU kernel (byol.augment.fused) into a private cache, never into
the user's ``$BYOL_CACHE_DIR/kernels`` or ``~/.cache/byol/kernels``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from byol.augment import fused


@pytest.fixture(scope="session")
def _kernel_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("byol-cache")


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(_kernel_cache_root: Path) -> Iterator[Path]:
    """The kernel directory the tests of one module build into (shared by the session, so it is built once).

    The module's first use of the kernel loads it from here: the process-wide "already tried" state of
    ``fused`` is reset for the module and restored after it, as is ``BYOL_CACHE_DIR`` (which also moves the
    image cache of byol.data, so it is not left set for other tests). Nothing evaluates ``fused.available()``
    at collection, before this runs: tests that need the kernel ask for it in a fixture.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BYOL_CACHE_DIR", str(_kernel_cache_root))
        mp.setattr(fused, "_tried", False)
        mp.setattr(fused, "_lib", None)
        yield _kernel_cache_root / "kernels"

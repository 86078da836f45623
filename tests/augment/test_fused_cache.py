"""The compiled view kernel is only loaded from a directory private to the user (docs/reliability.md)."""

import shutil
import tempfile

import pytest

from byol.augment import fused

pytestmark = pytest.mark.skipif(fused._compiler() is None, reason="no C compiler")


def test_a_world_writable_kernel_cache_is_never_loaded_from(tmp_path, monkeypatch):
    monkeypatch.setattr(fused, "_private", None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the private build goes under tmp_path
    good = fused.compile_kernel(tmp_path / "mine")
    assert good.parent == tmp_path / "mine"  # a private cache is used as is
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    planted = shared / good.name  # what another user could have put where byol would look
    shutil.copy(good, planted)
    with pytest.warns(UserWarning, match="not private to this user") as seen:
        lib = fused.compile_kernel(shared)
        assert fused.compile_kernel(shared) == lib  # one warning, one private build
    assert len(seen) == 1
    assert lib != planted and lib.parent != shared and not lib.parent.stat().st_mode & 0o077

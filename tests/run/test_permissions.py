"""'permission denied' as a user meets it (docs/reliability.md). CI runs as root, who reads and writes any
file whatever its mode, so these tests run the CLI in a subprocess without the capabilities that let root
ignore permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER dropped from its bounding set
before exec: the new program starts without them). Mode bits then bind it as they bind any user, its own
files included. Switching to an unprivileged uid instead would not do here: the interpreter lives under
/root. Run by an ordinary user, the subprocess needs nothing dropped."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_PR_CAPBSET_DROP = 24
_DAC_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (linux/capability.h)
_CAP_SETPCAP = 8


def _effective_capabilities() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))


def _drop_dac_capabilities() -> None:
    """Runs in the child between fork and exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _DAC_CAPABILITIES:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


@pytest.fixture
def byol_unprivileged(tmp_path):
    """``(*args) -> CompletedProcess``: ``python -m byol ARGS`` for which file modes apply."""
    if not sys.platform.startswith("linux"):
        pytest.skip("dropping root's capabilities is Linux-only")
    root = os.geteuid() == 0
    if root and not _effective_capabilities() >> _CAP_SETPCAP & 1:
        pytest.skip("running as root without CAP_SETPCAP: cannot drop the capabilities that bypass file modes")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "BYOL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("BYOL_REQUIRE_REAL_DATA", None)

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "byol", *map(str, args)], env=env, cwd=tmp_path, text=True,
                              capture_output=True, timeout=600, preexec_fn=_drop_dac_capabilities if root else None)

    return run


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    return root


def _args(data: Path, run: Path) -> list:
    return ["pretrain", "--config", "tiny", "--data", data, "--run-dir", run, "--set", "train.epochs=0.5",
            "--set", "train.knn_every=0", "--set", "train.verdict=false", "--threads", 1]


def test_an_unreadable_image_is_skipped_as_permission_denied(byol_unprivileged, tmp_path):
    data = _folder(tmp_path / "imgs")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(data / "b" / "locked.png")
    (data / "b" / "locked.png").chmod(0)
    try:
        p = byol_unprivileged(*_args(data, tmp_path / "run"))
    finally:
        (data / "b" / "locked.png").chmod(0o644)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "b/locked.png\tpermission denied" in (tmp_path / "run" / "skipped_files.txt").read_text()
    warning = [line for line in p.stderr.splitlines() if line.startswith("byol: warning:") and "locked" in line]
    assert len(warning) == 1 and "40 images; skipped 1 file(s) (1 permission denied): b/locked.png" in warning[0]


def test_an_unreadable_data_folder_is_a_one_line_error(byol_unprivileged, tmp_path):
    data = _folder(tmp_path / "imgs")
    data.chmod(0)
    try:
        p = byol_unprivileged(*_args(data, tmp_path / "run"))
    finally:
        data.chmod(0o755)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"byol: error: cannot list {data}: Permission denied; check the path and its permissions"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unwritable_run_directory_is_a_one_line_error(byol_unprivileged, tmp_path):
    data = _folder(tmp_path / "imgs")
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o555)
    try:
        p = byol_unprivileged(*_args(data, parent / "run"))
    finally:
        parent.chmod(0o755)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stderr.strip().startswith("byol: error:") and str(parent / "run") in p.stderr

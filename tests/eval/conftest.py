import contextlib

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The eval tests use tiny arrays: on a shared 2-core machine the per-op thread synchronisation
    of OpenMP/BLAS, not arithmetic, dominates them (observed 30x slower with 2 threads under load).
    Applies to torch and to numpy's BLAS (used by the scikit-learn reference fits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        limit = contextlib.nullcontext()
    with limit:
        yield
    torch.set_num_threads(before)


# ---- a tiny pretrained run, shared by the CLI tests of this package ------------------------------


def make_images(n_per_class: int = 40, size: int = 16, channels: int = 1, seed: int = 0):
    """The ``labeled_images`` recipe (3 easy classes), optionally RGB (channel-scaled copies)."""
    g = torch.Generator().manual_seed(seed)
    n, s = n_per_class, size
    base = torch.randint(0, 60, (3 * n, 1, s, s), generator=g, dtype=torch.uint8)
    a, b = s // 4, s - s // 4
    base[:n, :, a:b, a:b] += 180
    base[n : 2 * n, :, 2 : s - 2, 2 : s - 2] += 90
    base[2 * n :, :, :, ::3] += 150
    if channels == 3:
        base = torch.cat([base, (base.float() * 0.8).to(torch.uint8), (base.float() * 0.6).to(torch.uint8)], 1)
    return base, torch.arange(3).repeat_interleave(n)


def write_folder(root, images, labels):
    from PIL import Image

    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / f"class{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def class_folders():
    """``(root, **make_images options) -> root``: generated images written as ``root/class<y>/*.png``."""
    return lambda root, **options: write_folder(root, *make_images(**options))


@pytest.fixture(autouse=True)
def _isolated_default_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BYOL_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 1-epoch ``tiny`` BYOL run on 120 generated 16x16 grayscale images (3 classes, no test split).

    Returns ``(run_dir, image_folder, cache_dir)``. Tests must not write into ``run_dir`` except
    through ``--out-dir`` elsewhere, or under ``run_dir/eval`` (the default out dir).
    """
    from byol.cli.main import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("tiny")
    folder = write_folder(base / "imgs", *make_images())
    cache = base / "cache"
    run = base / "run"
    rc = main(["pretrain", "--config", "tiny", "--data", str(folder), "--run-dir", str(run),
               "--set", "train.epochs=1", "--set", f"data.cache_dir={cache}"])
    torch.set_num_threads(before)
    assert rc == 0
    return run, folder, cache


@pytest.fixture
def rgb_folder(tmp_path):
    """36 generated 20x20 RGB images in 3 class folders (no test split)."""
    return write_folder(tmp_path / "rgb", *make_images(n_per_class=12, size=20, channels=3, seed=1))

"""Fixtures for the data tests: tiny generated image folders, zips and IDX files."""

from __future__ import annotations

import gzip
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own default cache dir, never ~/.cache/byol."""
    cache = tmp_path / "default-cache"
    monkeypatch.setenv("BYOL_CACHE_DIR", str(cache))
    return cache


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def save_image() -> Callable[[Path, Image.Image], Path]:
    return _save


@pytest.fixture
def rgb_pixels() -> Callable[[int, int, int], np.ndarray]:
    """Distinct, reproducible HxWx3 uint8 pixels for image number ``seed``."""

    def make(seed: int, height: int = 4, width: int = 4) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)

    return make


@pytest.fixture
def labeled_folder(tmp_path: Path, rgb_pixels: Callable[..., np.ndarray]) -> tuple[Path, dict[str, np.ndarray]]:
    """``root/cat/{0,1,2}.png`` and ``root/dog/{3,4}.png`` plus ``root/dog/nested/5.png`` (4x4 RGB, lossless).

    Returns the root and the expected CHW pixels by relative path.
    """
    root = tmp_path / "pets"
    expected: dict[str, np.ndarray] = {}
    for i, rel in enumerate(["cat/0.png", "cat/1.png", "cat/2.png", "dog/3.png", "dog/4.png", "dog/nested/5.png"]):
        pixels = rgb_pixels(i)
        _save(root / rel, Image.fromarray(pixels))
        expected[rel] = pixels.transpose(2, 0, 1)
    return root, expected


@pytest.fixture
def zip_dir() -> Callable[[Path, Path, str], Path]:
    """Zip every file below ``folder`` into ``archive``, under the member prefix ``prefix``."""

    def make(folder: Path, archive: Path, prefix: str = "") -> Path:
        with zipfile.ZipFile(archive, "w") as zf:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    zf.write(f, prefix + f.relative_to(folder).as_posix())
        return archive

    return make


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (unsigned byte data) for ``array``: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


FASHION_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


@pytest.fixture
def fake_fashion() -> Callable[..., dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Write a tiny Fashion-MNIST (5 train and 3 test images of 6x5 pixels) as IDX files into ``directory``.

    Returns ``{split: (images [N, H, W], labels [N])}``.
    """

    def make(directory: Path, *, compressed: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        directory.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(7)
        data = {
            "train": (rng.integers(0, 256, (5, 6, 5), dtype=np.uint8), np.array([0, 9, 3, 3, 1], dtype=np.uint8)),
            "test": (rng.integers(0, 256, (3, 6, 5), dtype=np.uint8), np.array([2, 5, 8], dtype=np.uint8)),
        }
        for (split, kind), stem in FASHION_STEMS.items():
            payload = _idx_bytes(data[split][0] if kind == "images" else data[split][1])
            if compressed:
                (directory / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (directory / stem).write_bytes(payload)
        return data

    return make

import pytest
import torch
from PIL import Image


def _write(root, n_per_class, seed):
    """3 easy classes of 16x16 grey images (bright square / dark square / stripes), noise from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    s = 16
    for y in range(3):
        d = root / f"class{y}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = torch.randint(0, 60, (s, s), generator=g, dtype=torch.uint8)
            if y == 0:
                img[4:12, 4:12] += 180
            elif y == 1:
                img[2:14, 2:14] += 90
            else:
                img[:, ::3] += 150
            Image.fromarray(img.numpy()).save(d / f"{i:03d}.png")


@pytest.fixture(scope="session")
def split_folder(tmp_path_factory):
    """``train/`` (3 x 32) and ``test/`` (3 x 12) class folders of generated images."""
    root = tmp_path_factory.mktemp("repro") / "data"
    _write(root / "train", 32, seed=0)
    _write(root / "test", 12, seed=1)
    return root

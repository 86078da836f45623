import os

import pytest
import torch
from PIL import Image

# Deterministic, small-footprint tests on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def labeled_images():
    """120 generated 16x16 grayscale images in 3 classes (bright square / dark square / stripes)."""
    g = torch.Generator().manual_seed(0)
    n, s = 40, 16
    base = torch.randint(0, 60, (3 * n, 1, s, s), generator=g, dtype=torch.uint8)
    base[:n, :, 4:12, 4:12] += 180
    base[n : 2 * n, :, 2:14, 2:14] += 90
    base[2 * n :, :, :, ::3] += 150
    labels = torch.arange(3).repeat_interleave(n)
    return base, labels


@pytest.fixture(autouse=True)
def _restore_threads():
    """A test that runs the CLI with --threads changes torch's process-wide thread count: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_folder(tmp_path, labeled_images):
    images, labels = labeled_images
    root = tmp_path / "imgs"
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / f"class{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(d / f"{i:03d}.png")
    (root / "class0" / "broken.png").write_bytes(b"not an image at all")
    return root

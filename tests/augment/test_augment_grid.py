import numpy as np
import torch
from PIL import Image

from byol.augment import TwoViewAugment, paper_views, save_view_grid


def test_save_view_grid(tmp_path):
    x = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8)
    aug = TwoViewAugment(*paper_views(), size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    path = save_view_grid(x, aug, tmp_path / "sub" / "views.png", n_views=5, generator=torch.Generator().manual_seed(0))
    img = Image.open(path)
    pad = 2
    assert img.size == (6 * (16 + pad) + pad, 3 * (16 + pad) + pad)
    # column 0 is the original (resized), not a random view
    arr = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float() / 255
    col0 = arr[:, pad : pad + 16, pad : pad + 16]
    ref = torch.nn.functional.interpolate(x[:1].float() / 255, size=16, mode="bilinear", antialias=True)[0]
    assert (col0 - ref).abs().max() < 2 / 255


def test_save_view_grid_grayscale(tmp_path):
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    aug = TwoViewAugment(*paper_views(), size=28, mean=(0.5,), std=(0.5,))
    path = save_view_grid(x, aug, tmp_path / "g.png", n_views=2)
    assert Image.open(path).size == (3 * 30 + 2, 2 * 30 + 2)

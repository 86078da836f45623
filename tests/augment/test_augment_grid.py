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


def test_save_view_grid_shows_multi_crop_small_views_at_their_size_on_white(tmp_path):
    x = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    aug = TwoViewAugment(*paper_views(), size=16, mean=(0.5,) * 3, std=(0.25,) * 3, small_crops=2, small_size=8)
    path = save_view_grid(x, aug, tmp_path / "mc.png", n_views=4, generator=torch.Generator().manual_seed(0))
    img = Image.open(path)
    pad = 2
    assert img.size == ((1 + 4 + 2) * (16 + pad) + pad, 2 * (16 + pad) + pad)  # 2 small-view columns
    arr = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float() / 255
    for col in (5, 6):
        left = pad + col * (16 + pad)
        tile = arr[:, pad : pad + 16, left : left + 16]
        ring = torch.ones(16, 16, dtype=torch.bool)
        ring[4:12, 4:12] = False
        assert (tile[:, ring] == 1.0).all()  # white around the 8 px view, centred
        assert (tile[:, 4:12, 4:12] < 1.0).any()  # ... and the view itself inside
    # the small views come from the generator after the two views: the T / T' columns are the draws
    # a grid without multi-crop shows
    plain = TwoViewAugment(*paper_views(), size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    p2 = save_view_grid(x, plain, tmp_path / "plain.png", n_views=2, generator=torch.Generator().manual_seed(0))
    a2 = np.array(Image.open(p2).convert("RGB"))
    assert np.array_equal(np.array(img.convert("RGB"))[:, : a2.shape[1] - pad], a2[:, :-pad])

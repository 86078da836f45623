"""Multi-crop views (SwAV, Caron et al. 2020, section 3.2): the two global views, then ``small_crops`` small ones,
drawn after the two from the same generator, per sample, sharded like them; none by default (the two views of
before, bit for bit); and the config section that asks for them."""

import pytest
import torch

from byol.augment import TwoViewAugment, apply_view, paper_views
from byol.config import ViewsConfig
from byol.config.views import SMALL_CROP_SCALE, small_view_spec, small_view_size
from byol.errors import ConfigError
from byol.methods.registry import check_multi_crop
from byol.train.config import build_config, check_small_crops_path

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(n=6, seed=0):
    return torch.randint(0, 256, (n, 3, 24, 24), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _aug(**kw):
    return TwoViewAugment(*paper_views(), 16, MEAN, STD, **kw)


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


def test_no_small_crops_is_two_views_drawn_as_two_separate_apply_view_calls():
    x = _images()
    views = _aug()(x, _gen())
    assert isinstance(views, tuple) and len(views) == 2
    g = _gen()  # an independent path: each view by itself, view 1's draws first
    t, t_prime = paper_views()
    ref = (apply_view(x, t, 16, MEAN, STD, g), apply_view(x, t_prime, 16, MEAN, STD, g))
    for v, r in zip(views, ref):
        assert torch.equal(v, r)


def test_small_views_follow_the_two_with_their_own_size_spec_and_draws():
    x = _images()
    n, views = 3, _aug(small_crops=3)(x, _gen())
    assert len(views) == 2 + n
    assert [tuple(v.shape) for v in views] == [(6, 3, 16, 16)] * 2 + [(6, 3, 8, 8)] * n
    # the global views are those of a run without small views: the small ones are drawn after them
    for v, r in zip(views[:2], _aug()(x, _gen())):
        assert torch.equal(v, r)
    # each small view is view 1's T with SwAV's small crop scale, from the generator where the last left it
    g = _gen()
    t, t_prime = paper_views()
    apply_view(x, t, 16, MEAN, STD, g), apply_view(x, t_prime, 16, MEAN, STD, g)
    small = small_view_spec(t)
    for v in views[2:]:
        assert torch.equal(v, apply_view(x, small, 8, MEAN, STD, g))
    assert not torch.equal(views[2], views[3])  # independent draws per small view
    # deterministic in the seed, different for another seed
    again, other = _aug(small_crops=3)(x, _gen()), _aug(small_crops=3)(x, _gen(4))
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    assert not torch.equal(views[4], other[4])


def test_small_crop_boxes_cover_the_small_scale_and_params_come_in_view_order():
    x = _images(64)
    out = _aug(small_crops=2, small_size=6)(x, _gen(), return_params=True)
    views, params = out[:4], out[4:]
    assert [v.shape[-1] for v in views] == [16, 16, 6, 6] and len(params) == 4
    for p, (lo, hi) in zip(params, [(0.08, 1.0)] * 2 + [SMALL_CROP_SCALE] * 2):
        area = p["boxes"][:, 2] * p["boxes"][:, 3] / (24 * 24)
        # integer boxes round the area a little; the draws span the range
        assert area.min() >= lo * 0.7 and area.max() <= hi * 1.3 + 1e-6
    small_area = params[2]["boxes"][:, 2] * params[2]["boxes"][:, 3] / (24 * 24)
    assert small_area.max() < 0.2


def test_shards_of_a_global_batch_make_its_views_small_ones_included():
    x = _images(8)
    aug = _aug(small_crops=2)
    full = aug(x, _gen())
    parts = [aug(x[r * 4:(r + 1) * 4], _gen(), shard=(r, 2)) for r in range(2)]
    for i, v in enumerate(full):
        assert torch.equal(v, torch.cat([parts[0][i], parts[1][i]]))


def test_eager_ops_and_fused_kernel_make_the_same_small_views(monkeypatch):
    from byol.augment import fused

    x = _images()
    a = _aug(small_crops=2)(x, _gen())
    monkeypatch.setattr(fused, "supports", lambda *args: False)
    b = _aug(small_crops=2)(x, _gen())
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-4, rtol=0)


def test_the_streamed_crops_take_no_small_views():
    crops = _images(4)[:, :, :16, :16].contiguous()
    assert len(_aug().from_crops(crops, crops, _gen())) == 2
    with pytest.raises(ConfigError, match="data.stream=off"):
        _aug(small_crops=1).from_crops(crops, crops, _gen())
    with pytest.raises(ConfigError, match="data.stream=off"):
        check_small_crops_path(2, streamed=True)
    check_small_crops_path(0, streamed=True)
    with pytest.raises(ConfigError, match="data.stream=off"):
        build_config(overrides=["views.small_crops=2", "data.stream=on"])


def test_views_section_checks_the_small_views_when_loaded():
    c = ViewsConfig()
    assert (c.small_crops, c.small_size, c.small) == (0, None, {})
    assert small_view_size(32, None) == 16 and small_view_size(224, None) == 112 and small_view_size(224, 96) == 96
    spec = ViewsConfig(view1={"gray_p": 0.5}).small_spec  # view 1's ops, SwAV's small crop scale
    assert spec.crop_scale == SMALL_CROP_SCALE and spec.gray_p == 0.5
    assert ViewsConfig(small={"crop_scale": [0.1, 0.3]}).small_spec.crop_scale == (0.1, 0.3)
    cfg = build_config(overrides=["views.small_crops=4", "views.small_size=12"])
    assert (cfg.views.small_crops, cfg.views.small_size) == (4, 12)
    assert cfg.views.specs == build_config().views.specs  # the global views' defaults are unchanged
    for bad, key in ((["views.small_crops=-1"], "views.small_crops"), (["views.small_size=0"], "views.small_size"),
                     (["views.small.hue=0.9"], "views.small.hue"), (["views.small.nope=1"], "views.small.nope")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
            build_config(overrides=bad)
        assert "\n" not in str(e.value)


def test_only_methods_that_declare_multi_crop_take_small_views():
    check_multi_crop("simclr", 0)
    check_multi_crop("byol", 2)
    check_multi_crop("swav", 2)
    with pytest.raises(ConfigError, match="'simclr' takes no small views; the methods that do: byol, swav"):
        check_multi_crop("simclr", 2)

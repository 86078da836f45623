"""The two-view pipeline: frequencies and ranges of the per-sample draws, wiring of the ops, determinism."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from byol.augment import TwoViewAugment, ViewSpec, apply_view, eval_transform, paper_views
from byol.augment import ops
from byol.errors import ConfigError

MEAN3, STD3 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
N = 4000  # statistics: binomial std at p=0.5 is 0.008, tolerances are ~4 std


def uint8_images(B, C=3, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, C, H, W), generator=g, dtype=torch.uint8)


def denorm(x, mean, std):
    return x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


# Crop that is the whole image, nothing else: the pipeline reduces to normalize(images / 255).
IDENTITY = ViewSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0, jitter_p=0, gray_p=0, blur_p=0)


@pytest.fixture(scope="module")
def paper_params():
    t, tp = paper_views()
    aug = TwoViewAugment(t, tp, size=8, mean=MEAN3, std=STD3)
    x = uint8_images(N, seed=1)
    v1, v2, p1, p2 = aug(x, torch.Generator().manual_seed(0), return_params=True)
    return v1, v2, p1, p2


def test_op_frequencies_per_view(paper_params):
    _, _, p1, p2 = paper_params
    expected = {  # (T, T')
        "flip": (0.5, 0.5),
        "jitter": (0.8, 0.8),
        "gray": (0.2, 0.2),
        "blur": (1.0, 0.1),
        "solarize": (0.0, 0.2),
    }
    for key, (e1, e2) in expected.items():
        f1, f2 = p1[key].float().mean().item(), p2[key].float().mean().item()
        assert f1 == pytest.approx(e1, abs=0.03), key
        assert f2 == pytest.approx(e2, abs=0.03), key
    # independent draws: grayscale does not depend on jitter, flip does not depend on blur
    j, gr = p1["jitter"], p1["gray"]
    assert gr[j].float().mean().item() == pytest.approx(0.2, abs=0.03)
    assert gr[~j].float().mean().item() == pytest.approx(0.2, abs=0.05)


def test_jitter_parameter_ranges(paper_params):
    _, _, p1, _ = paper_params
    ranges = {
        "brightness": (-0.4, 0.4),  # additive delta (the paper's code)
        "contrast": (0.6, 1.4),
        "saturation": (0.8, 1.2),
        "hue": (-0.1, 0.1),
        "sigma": (0.1, 2.0),
    }
    for key, (lo, hi) in ranges.items():
        v = p1[key]
        assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6, key
        span = hi - lo
        assert v.min() < lo + 0.01 * span and v.max() > hi - 0.01 * span, key  # covers the range
        assert v.mean().item() == pytest.approx((lo + hi) / 2, abs=0.03 * span), key  # uniform: centred
        assert v.std().item() == pytest.approx(span / 12**0.5, rel=0.05), key


def test_multiplicative_brightness_range():
    spec = ViewSpec(brightness_mode="multiplicative")
    _, p = apply_view(uint8_images(N), spec, 8, MEAN3, STD3, torch.Generator().manual_seed(0), return_params=True)
    b = p["brightness"]
    assert b.min() >= 0.6 - 1e-6 and b.max() <= 1.4 + 1e-6 and b.min() < 0.61 and b.max() > 1.39


def test_jitter_order_is_a_uniform_random_permutation(paper_params):
    _, _, p1, _ = paper_params
    order = p1["order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand_as(order))
    counts = {perm: 0 for perm in itertools.permutations(range(4))}
    for row in order.tolist():
        counts[tuple(row)] += 1
    assert min(counts.values()) > N / 24 * 0.6 and max(counts.values()) < N / 24 * 1.4
    _, p = apply_view(uint8_images(64), ViewSpec(jitter_random_order=False), 8, MEAN3, STD3, return_params=True)
    assert torch.equal(p["order"], torch.arange(4).expand(64, 4))


def test_crop_areas_and_boxes(paper_params):
    _, _, p1, p2 = paper_params
    for p in (p1, p2):
        x0, y0, w, h = p["boxes"].unbind(1)
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 8 + 1e-4).all() and (y0 + h <= 8 + 1e-4).all()
        area = w * h / 64
        assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-5
        # realised areas are U[0.08, 1] except for the clipped (large) boxes: the lower quantiles are exact
        q = torch.tensor([0.1, 0.25, 0.5])
        assert torch.allclose(torch.quantile(area, q), 0.08 + 0.92 * q, atol=0.03)
    assert not torch.allclose(p1["boxes"], p2["boxes"])  # the two views draw independently


def test_per_sample_parameters_differ_within_a_batch():
    # The same image repeated: a per-batch draw (lucidrains' bug) would give identical views.
    x = uint8_images(1, H=16, W=16).expand(16, 3, 16, 16).contiguous()
    v1, v2, p1, _ = TwoViewAugment(*paper_views(), size=16, mean=MEAN3, std=STD3)(x, return_params=True)
    for key in ("brightness", "contrast", "saturation", "hue", "sigma"):
        assert p1[key].unique().numel() == 16, key
    assert p1["boxes"].unique(dim=0).shape[0] == 16
    flat = v1.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(16) * 1e9).min() > 1e-3  # every pair of views differs


def test_ops_are_wired_to_their_masks():
    x = uint8_images(256, H=10, W=10, seed=3)
    xf = x.float() / 255
    g = torch.Generator().manual_seed(0)

    def run(spec):
        out, p = apply_view(x, spec, 10, (0.0,), (1.0,), g, return_params=True)
        return out, p

    out, _ = run(IDENTITY)
    torch.testing.assert_close(out, xf, atol=1e-6, rtol=0)

    out, p = run(IDENTITY.replace(solarize_p=0.5))
    m = p["solarize"]
    assert 0.3 < m.float().mean() < 0.7
    torch.testing.assert_close(out[m], ops.solarize(xf[m]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[~m], xf[~m], atol=1e-6, rtol=0)

    out, p = run(IDENTITY.replace(gray_p=0.5))
    m = p["gray"]
    torch.testing.assert_close(out[m], ops.to_grayscale(xf[m]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[~m], xf[~m], atol=1e-6, rtol=0)

    out, p = run(IDENTITY.replace(blur_p=0.5))
    m = p["blur"]
    torch.testing.assert_close(out[m], ops.gaussian_blur(xf[m], p["sigma"][m], 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[~m], xf[~m], atol=1e-6, rtol=0)

    out, p = run(IDENTITY.replace(flip_p=0.5))
    m = p["flip"]
    torch.testing.assert_close(out[m], xf[m].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[~m], xf[~m], atol=1e-6, rtol=0)

    out, p = run(IDENTITY.replace(jitter_p=0.5))
    m = p["jitter"]
    ref = ops.color_jitter(xf, m, p["brightness"], p["contrast"], p["saturation"], p["hue"], p["order"])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # the identity crop is exact only to ~1e-7
    assert (out[m] - xf[m]).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    torch.testing.assert_close(out[~m], xf[~m], atol=1e-6, rtol=0)


def test_full_pipeline_order_crop_flip_jitter_gray_blur_solarize():
    x = uint8_images(32, H=12, W=12, seed=4)
    spec = ViewSpec(solarize_p=0.5, blur_p=0.5, gray_p=0.5)
    out, p = apply_view(x, spec, 9, MEAN3, STD3, torch.Generator().manual_seed(5), return_params=True)
    ref = ops.resized_crop(x.float() / 255, p["boxes"], 9, p["flip"])
    ref = ops.color_jitter(ref, p["jitter"], p["brightness"], p["contrast"], p["saturation"], p["hue"], p["order"])
    ref = torch.where(p["gray"].view(-1, 1, 1, 1), ops.to_grayscale(ref), ref)
    ref = torch.where(p["blur"].view(-1, 1, 1, 1), ops.gaussian_blur(ref, p["sigma"], 3), ref)
    ref = torch.where(p["solarize"].view(-1, 1, 1, 1), ops.solarize(ref), ref)
    ref = (ref.clamp(0, 1) - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_outputs_shape_dtype_range_and_device():
    x = uint8_images(5, H=20, W=14)
    aug = TwoViewAugment(*paper_views(), size=12, mean=MEAN3, std=STD3)
    v1, v2 = aug(x, torch.Generator().manual_seed(0))
    for v in (v1, v2):
        assert v.shape == (5, 3, 12, 12) and v.dtype == torch.float32 and v.device == x.device
        d = denorm(v, MEAN3, STD3)
        assert d.min() >= -1e-5 and d.max() <= 1 + 1e-5
    assert not torch.allclose(v1, v2)
    x1 = uint8_images(5, C=1, H=28, W=28)
    v1, v2 = TwoViewAugment(*paper_views(), size=28, mean=(0.286,), std=(0.353,))(x1)
    assert v1.shape == (5, 1, 28, 28) and v2.shape == (5, 1, 28, 28)


def test_determinism_with_seeded_generator():
    x = uint8_images(8, H=16, W=16)
    aug = TwoViewAugment(*paper_views(), size=16, mean=MEAN3, std=STD3)
    a = aug(x, torch.Generator().manual_seed(123))
    b = aug(x, torch.Generator().manual_seed(123))
    c = aug(x, torch.Generator().manual_seed(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0])
    torch.manual_seed(7)
    d = aug(x)
    torch.manual_seed(7)
    e = aug(x)
    assert torch.equal(d[0], e[0])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_batch_device(device):
    x = uint8_images(4, H=16, W=16).to(device)
    aug = TwoViewAugment(*paper_views(), size=8, mean=MEAN3, std=STD3)
    v1, v2 = aug(x, torch.Generator(device=device).manual_seed(0))
    assert v1.device.type == device and v2.device.type == device
    v1c, _ = aug(x, torch.Generator().manual_seed(0))  # a CPU generator also works
    assert v1c.device.type == device
    assert eval_transform(x, 8, MEAN3, STD3).device.type == device


def test_half_precision_is_refused_on_cpu():
    with pytest.raises(ValueError, match="float32"):
        TwoViewAugment(*paper_views(), size=8, mean=MEAN3, std=STD3, dtype=torch.bfloat16)(uint8_images(2))


def test_input_validation():
    aug = TwoViewAugment(*paper_views(), size=8, mean=MEAN3, std=STD3)
    with pytest.raises(ValueError):
        aug(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError):
        aug(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(ConfigError):
        TwoViewAugment(*paper_views(), size=8, mean=MEAN3, std=STD3)(uint8_images(2, C=1))
    with pytest.raises(ConfigError):
        eval_transform(uint8_images(2), 8, MEAN3, (0.2, 0.0, 0.2))
    # float input in [0, 1] is accepted and equals the uint8 path
    x = uint8_images(2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(aug(x.float() / 255, g())[0], aug(x, g())[0], atol=1e-5, rtol=0)


def test_eval_transform():
    x = uint8_images(3, H=16, W=16)
    out = eval_transform(x, 16, MEAN3, STD3)
    ref = (x.float() / 255 - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1)
    torch.testing.assert_close(out, ref)
    out = eval_transform(x, 8, MEAN3, STD3)
    ref = F.interpolate(x.float() / 255, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(denorm(out, MEAN3, STD3), ref, atol=1e-5, rtol=0)
    assert torch.equal(eval_transform(x, 8, MEAN3, STD3), out)  # no randomness
    xf = x.float() / 255
    xf0 = xf.clone()
    eval_transform(xf, 16, MEAN3, STD3)
    assert torch.equal(xf, xf0)  # never modifies its input


@pytest.mark.parametrize("fused_on", [True, False])
def test_from_crops_is_the_pipeline_without_its_crop(monkeypatch, fused_on):
    # Batches that are already each view's crop (the streaming path) get every other op: with a crop spec
    # whose box is always the whole image, __call__ and from_crops give the same views from the same draws.
    if not fused_on:
        monkeypatch.setenv("BYOL_FUSED_VIEWS", "0")
    t, tp = paper_views()
    whole = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    aug = TwoViewAugment(t.replace(**whole), tp.replace(**whole), size=16, mean=MEAN3, std=STD3)
    x = uint8_images(64, H=16, W=16, seed=3)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a1, a2, p1, _ = aug(x, g1, return_params=True)
    b1, b2, q1, _ = aug.from_crops(x, x.clone(), g2, return_params=True)
    assert p1["flip"].any() and p1["jitter"].any() and p1["solarize"].sum() == 0  # the ops really ran
    assert torch.allclose(a1, b1, atol=1e-5) and torch.allclose(a2, b2, atol=1e-5)
    assert torch.equal(p1["flip"], q1["flip"]) and torch.equal(p1["hue"], q1["hue"])
    assert torch.equal(g1.get_state(), g2.get_state())  # both paths consume the generator alike
    # the paper's crop spec: from_crops ignores it (the crops were taken while decoding)
    paper = TwoViewAugment(t, tp, size=16, mean=MEAN3, std=STD3)
    c1, _ = paper.from_crops(x, x, torch.Generator().manual_seed(7))
    assert torch.allclose(c1, b1, atol=1e-5)
    with pytest.raises(ValueError, match="16x16"):
        paper.from_crops(uint8_images(2, H=8, W=8), uint8_images(2, H=8, W=8))

"""Batched ops against torchvision's functional ops (fixed parameters) and against their definitions."""

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from byol.augment import crop, ops


def rand_images(B=4, C=3, H=12, W=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, H, W, generator=g)


def full(B, v):
    return torch.full((B,), float(v))


# ------------------------------------------------------------------------------------------ crop boxes
def test_crop_draws_follow_uniform_area_and_log_uniform_ratio():
    n = 4000
    g = torch.Generator().manual_seed(1)
    boxes, area, log_r = ops.sample_crop_boxes(n, 8, 8, (0.08, 1.0), (3 / 4, 4 / 3), g, "cpu", return_draws=True)
    q = torch.linspace(0.1, 0.9, 9)
    # DKW: P(sup |F_n - F| > 0.03) <= 2 exp(-2 n 0.03^2) ~ 1e-3
    assert torch.allclose(torch.quantile(area, q), 0.08 + 0.92 * q, atol=0.03 * 0.92)
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    assert torch.allclose(torch.quantile(log_r, q), lo + (hi - lo) * q, atol=0.03 * (hi - lo))
    assert area.min() >= 0.08 and area.max() <= 1.0 and log_r.min() >= lo and log_r.max() <= hi


def test_crop_boxes_are_clipped_once_and_lie_inside_the_image():
    n, H, W = 4000, 8, 10
    g = torch.Generator().manual_seed(2)
    boxes, area, log_r = ops.sample_crop_boxes(n, H, W, (0.08, 1.0), (3 / 4, 4 / 3), g, "cpu", return_draws=True)
    x0, y0, w, h = boxes.unbind(1)
    eps = 1e-4
    assert (x0 >= 0).all() and (y0 >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (x0 + w <= W + eps).all() and (y0 + h <= H + eps).all()
    # sampled once: aspect and area are the draws unless a side was clipped to the image
    w_raw = torch.sqrt(area * H * W * torch.exp(log_r))
    h_raw = torch.sqrt(area * H * W / torch.exp(log_r))
    assert torch.allclose(w, w_raw.clamp(max=W), rtol=1e-5) and torch.allclose(h, h_raw.clamp(max=H), rtol=1e-5)
    unclipped = (w_raw < W) & (h_raw < H)
    assert torch.allclose((w * h / (H * W))[unclipped], area[unclipped], rtol=1e-4)
    assert (~unclipped).float().mean() > 0.05  # large areas do get clipped (no rejection loop)
    assert ((w * h / (H * W)) <= area + 1e-5).all()
    # position uniform over the valid positions
    fx = (x0 / (W - w))[w < W - 0.5]
    q = torch.tensor([0.25, 0.5, 0.75])
    assert torch.allclose(torch.quantile(fx, q), q, atol=0.04)


# ----------------------------------------------------------------------------------------- resized crop
def test_identity_crop_is_exact_and_flip_is_exact():
    x = rand_images(3, 3, 9, 7)
    boxes = torch.tensor([[0.0, 0.0, 7.0, 9.0]]).repeat(3, 1)
    out = ops.resized_crop(x, boxes, (9, 7))
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    flip = torch.tensor([True, False, True])
    out = ops.resized_crop(x, boxes, (9, 7), flip)
    torch.testing.assert_close(out[flip], TF.horizontal_flip(x[flip]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[~flip], x[~flip], atol=1e-6, rtol=0)


def test_grid_equals_affine_grid():
    g = torch.Generator().manual_seed(0)
    boxes = ops.sample_crop_boxes(5, 20, 13, generator=g)
    flip = torch.tensor([True, False, True, False, False])
    theta = ops.crop_theta(boxes, 20, 13, flip)
    ref = F.affine_grid(theta, [5, 3, 7, 11], align_corners=False)
    torch.testing.assert_close(crop._axis_aligned_grid(theta, 7, 11, torch.float32), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("box", [(2, 4, 8, 6), (0, 0, 16, 16), (6, 2, 10, 12)])
def test_integer_aligned_2x_downscale_matches_torchvision(box):
    # Output pixel j samples x0 + 2j + 1, exactly between two pixels inside the crop: both conventions agree.
    x = rand_images(2, 3, 16, 16)
    left, top, w, h = box
    out = ops.resized_crop(x, torch.tensor([[left, top, w, h]] * 2, dtype=torch.float32), (h // 2, w // 2))
    ref = TF.resized_crop(x, top, left, h, w, [h // 2, w // 2], antialias=False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_upscaled_crop_matches_torchvision_inside_and_differs_only_at_the_crop_border():
    # torchvision crops first and replicates the crop's edge pixels; grid_sample interpolates with the true
    # neighbour outside the crop. Away from the outermost output ring the two are the same function.
    x = rand_images(2, 3, 16, 16)
    left, top, w, h, size = 3, 5, 6, 6, 24
    out = ops.resized_crop(x, torch.tensor([[left, top, w, h]] * 2, dtype=torch.float32), size)
    ref = TF.resized_crop(x, top, left, h, w, [size, size], antialias=False)
    s = size // w  # output pixels within half an input pixel of the crop edge: 2 on each side
    inner = slice(s // 2, size - s // 2)
    torch.testing.assert_close(out[..., inner, inner], ref[..., inner, inner], atol=1e-5, rtol=0)
    assert (out - ref).abs().max() > 1e-3  # the border does differ (documented)
    # a crop touching the image border matches there too (border replication on both sides)
    out = ops.resized_crop(x, torch.tensor([[0, 0, w, h]] * 2, dtype=torch.float32), size)
    ref = TF.resized_crop(x, 0, 0, h, w, [size, size], antialias=False)
    torch.testing.assert_close(out[..., : size - 2, : size - 2], ref[..., : size - 2, : size - 2], atol=1e-5, rtol=0)


def test_flip_folded_into_crop_equals_flipping_the_crop():
    x = rand_images(4, 3, 16, 16)
    g = torch.Generator().manual_seed(3)
    boxes = ops.sample_crop_boxes(4, 16, 16, generator=g)
    flip = torch.tensor([True, True, False, True])
    a = ops.resized_crop(x, boxes, 10, flip)
    b = ops.resized_crop(x, boxes, 10)
    torch.testing.assert_close(a[flip], b[flip].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(a[~flip], b[~flip], atol=0, rtol=0)


def test_bicubic_output_is_clipped():
    x = (rand_images(2, 3, 8, 8) > 0.5).float()  # hard edges make bicubic overshoot
    out = ops.resized_crop(x, torch.tensor([[1.0, 1.0, 5.0, 5.0]] * 2), 16, interpolation="bicubic")
    assert out.min() >= 0 and out.max() <= 1


# -------------------------------------------------------------------------------------------- colour
def test_multiplicative_brightness_matches_torchvision():
    x = rand_images()
    for f in (0.6, 1.0, 1.4):
        torch.testing.assert_close(ops.adjust_brightness(x, full(4, f), "multiplicative"), TF.adjust_brightness(x, f))


def test_additive_brightness_is_the_papers_definition():
    x = rand_images()
    delta = torch.tensor([-0.4, -0.1, 0.2, 0.4])
    ref = (x + delta.view(-1, 1, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(ops.adjust_brightness(x, delta), ref, atol=0, rtol=0)
    with pytest.raises(ValueError):
        ops.adjust_brightness(x, delta, "gamma")


def test_contrast_blends_with_per_channel_mean():
    x = rand_images()
    f = torch.tensor([0.6, 0.9, 1.2, 1.4])
    mean = x.mean(dim=(2, 3), keepdim=True)  # per image, per channel (the paper's code)
    ref = (f.view(-1, 1, 1, 1) * x + (1 - f.view(-1, 1, 1, 1)) * mean).clamp(0, 1)
    out = ops.adjust_contrast(x, f)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # torchvision blends with the grayscale mean: different for colour images, identical for 1 channel
    assert (out[3] - TF.adjust_contrast(x[3], 1.4)).abs().max() > 1e-3
    x1 = rand_images(C=1)
    for i, fi in enumerate(f.tolist()):
        torch.testing.assert_close(ops.adjust_contrast(x1, f)[i], TF.adjust_contrast(x1[i], fi), atol=1e-6, rtol=0)


def test_saturation_matches_torchvision():
    x = rand_images()
    f = torch.tensor([0.0, 0.8, 1.2, 2.0])
    out = ops.adjust_saturation(x, f)
    for i, fi in enumerate(f.tolist()):
        torch.testing.assert_close(out[i], TF.adjust_saturation(x[i], fi), atol=1e-5, rtol=0)


def test_hue_matches_torchvision_per_sample():
    x = rand_images(6, 3, 10, 10)
    x[0] = 0.5  # grey image: hue undefined, must stay grey
    x[1, :, :5] = x[1, :1, :5]  # ties between channels
    shifts = torch.tensor([0.1, -0.1, 0.03, 0.5, -0.37, 0.0])
    out = ops.adjust_hue(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], s), atol=1e-5, rtol=0)
    assert (out[2] - x[2]).abs().max() > 1e-2  # a 0.03-turn shift visibly changes the colours


def test_hsv_saturation_matches_colorsys():
    """``mode="hsv"`` (the paper's code, tf.image.adjust_saturation): S * f clipped to [0, 1], per pixel
    against Python's colorsys; f = 3 clips S at 1 for most pixels."""
    x = rand_images(5, 3, 6, 6)
    x[0] = 0.5  # grey: unchanged
    x[1, :, :3] = x[1, :1, :3]  # ties between channels
    x[2, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0])  # black
    f = torch.tensor([1.2, 0.8, 1.2, 3.0, 0.0])
    out = ops.adjust_saturation(x, f, mode="hsv")
    ref = torch.empty_like(x)
    for i in range(x.shape[0]):
        for r in range(6):
            for c in range(6):
                h, s, v = colorsys.rgb_to_hsv(*x[i, :, r, c].double().tolist())
                ref[i, :, r, c] = torch.tensor(colorsys.hsv_to_rgb(h, min(max(s * float(f[i]), 0.0), 1.0), v))
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=0)
    assert (out - ops.adjust_saturation(x, f)).abs().max() > 0.05  # not the blend
    with pytest.raises(ValueError):
        ops.adjust_saturation(x, f, mode="hsl")


def test_hue_and_saturation_keep_hsv_invariants():
    x = rand_images(4, 3, 8, 8)
    out = ops.adjust_hue(x, full(4, 0.25))
    torch.testing.assert_close(out.amax(1), x.amax(1), atol=1e-5, rtol=0)  # value
    torch.testing.assert_close(out.amax(1) - out.amin(1), x.amax(1) - x.amin(1), atol=1e-5, rtol=0)  # chroma


def test_grayscale_matches_torchvision():
    x = rand_images()
    torch.testing.assert_close(ops.to_grayscale(x), TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6, rtol=0)


def test_single_channel_colour_ops_are_noops():
    x = rand_images(C=1)
    assert torch.equal(ops.adjust_saturation(x, full(4, 1.2)), x)
    assert torch.equal(ops.adjust_hue(x, full(4, 0.1)), x)
    assert torch.equal(ops.to_grayscale(x), x)


def test_ops_are_pure_unless_inplace():
    x = rand_images()
    x0 = x.clone()
    for fn in (
        lambda t, **k: ops.adjust_brightness(t, full(4, 0.2), **k),
        lambda t, **k: ops.adjust_contrast(t, full(4, 1.3), **k),
        lambda t, **k: ops.adjust_saturation(t, full(4, 1.2), **k),
        lambda t, **k: ops.adjust_hue(t, full(4, 0.1), **k),
        lambda t, **k: ops.to_grayscale(t, **k),
        lambda t, **k: ops.gaussian_blur(t, full(4, 1.0), 3, **k),
        lambda t, **k: ops.solarize(t, 0.5, **k),
    ):
        out = fn(x)
        assert torch.equal(x, x0)
        y = x.clone()
        out2 = fn(y, inplace=True)
        torch.testing.assert_close(out2, out, atol=1e-6, rtol=0)
        torch.testing.assert_close(y, out, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------- colour jitter
def _reference_jitter(x, apply, params, order, mode, sat_mode="blend"):
    """Per-sample Python loop over the standalone ops: the definition color_jitter must reproduce."""
    out = x.clone()
    fns = [
        lambda t, v: ops.adjust_brightness(t, v, mode),
        ops.adjust_contrast,
        lambda t, v: ops.adjust_saturation(t, v, sat_mode),
        ops.adjust_hue,
    ]
    for i in range(x.shape[0]):
        if not apply[i]:
            continue
        t = x[i : i + 1]
        for k in order[i].tolist():
            t = fns[k](t, params[k][i : i + 1])
        out[i] = t[0]
    return out


@pytest.mark.parametrize("mode", ["additive", "multiplicative"])
def test_color_jitter_applies_each_samples_own_order(mode):
    B = 48
    x = rand_images(B, 3, 6, 6, seed=5)
    g = torch.Generator().manual_seed(6)
    u = torch.rand(B, 4, generator=g)
    bright = (u[:, 0] * 0.8 - 0.4) if mode == "additive" else (0.6 + 0.8 * u[:, 0])
    params = [bright, 0.6 + 0.8 * u[:, 1], 0.5 + u[:, 2], 0.2 * u[:, 3] - 0.1]
    order = torch.argsort(torch.rand(B, 4, generator=g), dim=1)
    apply = torch.rand(B, generator=g) < 0.8
    out = ops.color_jitter(x, apply, *params, order=order, brightness_mode=mode)
    ref = _reference_jitter(x, apply, params, order, mode)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=0)
    assert torch.equal(out[~apply], x[~apply])
    # the order matters: the fixed order gives a different result for samples whose order differs
    fixed = ops.color_jitter(x, apply, *params, order=None, brightness_mode=mode)
    fixed_ref = _reference_jitter(x, apply, params, torch.arange(4).expand(B, 4), mode)
    torch.testing.assert_close(fixed, fixed_ref, atol=2e-6, rtol=0)
    moved = apply & (order != torch.arange(4)).any(1)
    assert (fixed[moved] - out[moved]).abs().amax(dim=(1, 2, 3)).gt(1e-4).float().mean() > 0.5


def test_color_jitter_with_hsv_saturation_applies_each_samples_own_order():
    B = 48
    x = rand_images(B, 3, 6, 6, seed=7)
    g = torch.Generator().manual_seed(8)
    u = torch.rand(B, 4, generator=g)
    params = [u[:, 0] * 0.8 - 0.4, 0.6 + 0.8 * u[:, 1], 0.5 + u[:, 2], 0.2 * u[:, 3] - 0.1]
    order = torch.argsort(torch.rand(B, 4, generator=g), dim=1)
    apply = torch.rand(B, generator=g) < 0.8
    out = ops.color_jitter(x, apply, *params, order=order, saturation_mode="hsv")
    torch.testing.assert_close(out, _reference_jitter(x, apply, params, order, "additive", "hsv"), atol=2e-6, rtol=0)
    blend = ops.color_jitter(x, apply, *params, order=order)
    assert (out[apply] - blend[apply]).abs().amax(dim=(1, 2, 3)).gt(1e-3).float().mean() > 0.5


def test_color_jitter_skips_ops_given_none():
    x = rand_images()
    apply = torch.ones(4, dtype=torch.bool)
    out = ops.color_jitter(x, apply, None, full(4, 1.3), None, None)
    torch.testing.assert_close(out, ops.adjust_contrast(x, full(4, 1.3)), atol=0, rtol=0)


# --------------------------------------------------------------------------------------- blur, solarize
@pytest.mark.parametrize("k", [3, 5, 9])  # 3, 5: shifted-slice path; 9: grouped-conv path
def test_gaussian_blur_matches_torchvision_per_sample(k):
    x = rand_images(3, 3, 14, 11)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    out = ops.gaussian_blur(x, sigma, k)
    for i, s in enumerate(sigma.tolist()):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [k, k], [s, s]), atol=1e-5, rtol=0)
    assert (out[2] - x[2]).abs().max() > 1e-2
    with pytest.raises(ValueError):
        ops.gaussian_blur(x, sigma, 4)


@pytest.mark.parametrize("k", [3, 5, 9])  # both code paths, as above
def test_zero_padded_blur_is_a_same_convolution(k):
    """``padding="zeros"`` (the paper's code): a 2-D convolution with zeros outside the image, the kernel the
    outer product of the 1-D Gaussian taps (computed here from their definition); the interior equals the
    reflect-padded blur."""
    x = rand_images(3, 3, 14, 11)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    out = ops.gaussian_blur(x, sigma, k, "zeros")
    t = torch.arange(k, dtype=torch.float64) - k // 2
    for i, s in enumerate(sigma.tolist()):
        taps = torch.exp(-(t**2) / (2 * s * s))
        taps = taps / taps.sum()
        kern = torch.outer(taps, taps).expand(3, 1, k, k)
        ref = F.conv2d(x[i : i + 1].double(), kern, padding=k // 2, groups=3)[0]
        torch.testing.assert_close(out[i].double(), ref, atol=1e-5, rtol=0)
    p = k // 2
    reflect = ops.gaussian_blur(x, sigma, k)
    torch.testing.assert_close(out[..., p:-p, p:-p], reflect[..., p:-p, p:-p], atol=1e-6, rtol=0)
    assert (reflect[2] - out[2]).amin() > -1e-6 and (reflect[2, :, 0] - out[2, :, 0]).mean() > 0.05  # darker edge
    with pytest.raises(ValueError):
        ops.gaussian_blur(x, sigma, k, "same")


def test_gaussian_kernels_definition():
    kern = ops.gaussian_kernels(torch.tensor([1.0, 2.0]), 5)
    t = torch.arange(-2.0, 3.0)
    for i, s in enumerate((1.0, 2.0)):
        ref = torch.exp(-(t**2) / (2 * s * s))
        torch.testing.assert_close(kern[i], ref / ref.sum())


@pytest.mark.parametrize("thr", [0.5, 0.3, 0.8])
def test_solarize_matches_torchvision(thr):
    x = rand_images()
    x[0, 0, 0, :3] = torch.tensor([thr, 0.0, 1.0])
    torch.testing.assert_close(ops.solarize(x, thr), TF.solarize(x, thr), atol=1e-6, rtol=0)


def test_normalize():
    x = rand_images()
    m, s = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1), torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(ops.normalize(x.clone(), m, s), TF.normalize(x, [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]))

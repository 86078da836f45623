"""Batched image ops with per-sample parameters.

Every function here is vectorised over the batch and pure by default (``inplace=True`` lets the pipeline
reuse its own buffers): images are float tensors ``[B, C, H, W]`` in [0, 1] (C = 1 or 3) and every random
quantity is an explicit per-sample tensor of shape ``[B]`` (or ``[B, k]``), so two samples of one batch
never share a draw and nothing loops over images in Python. The functions run on whatever device their
inputs are on (the only host synchronisations are the mask counts in :func:`apply_subset` and
:func:`color_jitter`).

Differences from torchvision's functional ops (documented where they occur):

* crop boxes are sampled once and clipped (DeepMind's code), not with torchvision's 10-try rejection loop;
* crop boxes are continuous (sub-pixel), resampled with ``grid_sample``, so there is no antialiasing;
* brightness defaults to the paper's additive form; contrast blends with the per-channel mean.

The crops live in :mod:`byol.augment.crop` (re-exported here); the colour, blur, solarize and normalisation
ops stay together as the one reference the eager view path and the fused kernel's tests both read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from byol.augment.crop import crop_theta, resized_crop, sample_crop_boxes  # noqa: F401 (re-exported)

__all__ = [
    "LUMA",
    "sample_crop_boxes",
    "crop_theta",
    "resized_crop",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "color_jitter",
    "apply_subset",
    "to_grayscale",
    "gaussian_kernels",
    "gaussian_blur",
    "solarize",
    "normalize",
    "JITTER_OPS",
]

#: ITU-R 601 luma weights used for grayscale and saturation (as the paper and torchvision).
LUMA = (0.2989, 0.587, 0.114)

#: Order of the colour-jitter ops in the ``order`` permutation tensors of :func:`color_jitter`.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")




def _per_sample(p: Tensor, x: Tensor) -> Tensor:
    return p.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _own(x: Tensor, inplace: bool) -> Tensor:
    return x if inplace else x.clone()


def adjust_brightness(x: Tensor, value: Tensor, mode: str = "additive", *, inplace: bool = False) -> Tensor:
    """Brightness, clipped to [0, 1].

    ``"additive"`` (default, the paper's code): ``x + delta`` with ``delta = value`` (~U[-0.4, 0.4]).
    ``"multiplicative"`` (torchvision's ``adjust_brightness``): ``x * factor`` with ``factor = value``.
    """
    if mode not in ("additive", "multiplicative"):
        raise ValueError(f"brightness mode must be 'additive' or 'multiplicative', got {mode!r}")
    x = _own(x, inplace)
    v = _per_sample(value, x)
    x = x.add_(v) if mode == "additive" else x.mul_(v)
    return x.clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor, *, inplace: bool = False) -> Tensor:
    """Blend with the per-image **per-channel** mean: ``f * x + (1 - f) * mean_c(x)``, clipped.

    This is the paper's code (``tf.image.adjust_contrast``). torchvision instead blends every channel with
    the mean of the *grayscale* image; the two coincide for 1-channel images.
    """
    x = _own(x, inplace)
    f = _per_sample(factor, x)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return x.mul_(f).add_(mean.mul_(1.0 - f)).clamp_(0.0, 1.0)


def _gray(x: Tensor) -> Tensor:
    """Luma ``[B, 1, H, W]`` of an RGB batch."""
    r, g, b = x.unbind(1)
    return (r * LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).unsqueeze(1)


def adjust_saturation(x: Tensor, factor: Tensor, mode: str = "blend", *, inplace: bool = False) -> Tensor:
    """Saturation by ``factor``, clipped. No-op for 1 channel.

    ``"blend"`` (default, torchvision's): ``f * x + (1 - f) * gray(x)``. ``"hsv"`` (the paper's code,
    ``tf.image.adjust_saturation``): HSV saturation ``S * f`` clipped to [0, 1], hue and value kept. The two
    pivot on different points (luma vs the max channel): at the paper's f ~ U[0.8, 1.2] they differ by about
    as much as either changes the image (benchmarks/RESULTS.md, section 16).
    """
    if mode not in ("blend", "hsv"):
        raise ValueError(f"saturation mode must be 'blend' or 'hsv', got {mode!r}")
    if x.shape[1] == 1:
        return x
    x = _own(x, inplace)
    f = _per_sample(factor, x)
    if mode == "hsv":
        return _saturation_hsv(x, f)
    gray = _gray(x).mul_(1.0 - f)
    return x.mul_(f).add_(gray).clamp_(0.0, 1.0)


def _saturation_hsv(x: Tensor, f: Tensor) -> Tensor:
    """HSV saturation in place, without the round trip through hue: with value ``v = max`` and chroma
    ``c = max - min`` fixed by the hue sector, every channel is ``v - c * g(hue)``, so scaling S (i.e. c) by
    ``f`` and clipping S at 1 (i.e. c at v) is ``channel' = v - (v - channel) * min(f, v / c)``. Grey pixels
    (c = 0) stay as they are."""
    maxc = x.amax(dim=1, keepdim=True)
    ratio = x.amin(dim=1, keepdim=True).neg_().add_(maxc)  # chroma
    ratio.clamp_min_(torch.finfo(x.dtype).tiny).reciprocal_().mul_(maxc)  # v / c (finite: v <= 1)
    ratio = torch.minimum(ratio, f, out=ratio)
    return x.sub_(maxc).mul_(ratio).add_(maxc).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor, *, inplace: bool = False) -> Tensor:
    """Rotate the hue by ``shift`` turns (``[B]``, e.g. ~U[-0.1, 0.1]) keeping HSV saturation and value.

    Batched RGB -> HSV -> RGB (the HSV hexcone; where channels tie for the maximum the first of R, G, B
    defines the sector, which gives the same hue). Value ``v = max`` and chroma ``c = max - min`` are
    unchanged by a hue shift, so only the hue ``h`` (in sixths of a turn) is computed, and the RGB result
    is written in closed form: ``channel_n = v - c * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + h) mod 6`` and ``n = 5, 3, 1`` for R, G, B. No-op for 1 channel.

    Written without ``torch.where``, comparisons or ``remainder`` (each 5-50x slower than an arithmetic
    pass on CPU): the sector masks come from ``sign`` (``max - channel >= 0``, so ``1 - sign`` is 1 exactly
    where that channel is the max) and ``k mod 6`` from ``floor``. Works on 1/3-size planes with a few
    reused buffers.
    """
    if x.shape[1] == 1:
        return x
    x = _own(x, inplace)
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)
    c = x.amin(dim=1).neg_().add_(maxc)  # chroma
    # c == 0: grey pixel, its hue is irrelevant (scaled by c below). The clamp is the dtype's smallest normal
    # number so the reciprocal stays finite in float16 too.
    inv_c = c.clamp_min(torch.finfo(x.dtype).tiny).reciprocal_()
    is_r = torch.sub(maxc, r).sign_().neg_().add_(1.0)
    is_g = torch.sub(maxc, g).sign_().neg_().add_(1.0)
    is_g.addcmul_(is_g, is_r, value=-1.0)  # is_g * (1 - is_r)
    tmp = torch.sub(g, b)
    h = is_r.mul(tmp)  # R max: (g - b) / c
    torch.sub(b, r, out=tmp).add_(c, alpha=2.0)
    h.addcmul_(is_g, tmp)  # G max: 2 + (b - r) / c
    torch.sub(r, g, out=tmp).add_(c, alpha=4.0)
    is_r.add_(is_g).neg_().add_(1.0)  # is_b = 1 - is_r - is_g
    h.addcmul_(is_r, tmp)  # B max: 4 + (r - g) / c
    h.mul_(inv_c).add_(_per_sample(shift, x).view(-1, 1, 1), alpha=6.0)  # in (-1.6, 5.6) for |shift| <= 0.1
    k, t = is_g, tmp  # reuse the buffers
    for ch, n in enumerate((5.0, 3.0, 1.0)):
        torch.add(h, n, out=k)
        torch.mul(k, 1.0 / 6.0, out=t).floor_()
        k.sub_(t, alpha=6.0)  # k mod 6
        torch.mul(k, -1.0, out=t).add_(4.0)
        torch.minimum(k, t, out=k).clamp_(0.0, 1.0).mul_(c)
        torch.sub(maxc, k, out=x[:, ch])  # x's old values are no longer needed
    return x.clamp_(0.0, 1.0)


def apply_subset(x: Tensor, mask: Tensor, fn, *params: Tensor) -> Tensor:
    """``x[mask] = fn(x[mask], *params[mask])`` in place, leaving the other samples untouched.

    ``fn(t, *p)`` may modify ``t`` in place and must return the result. Skips the op when the mask is empty
    and avoids the gather/scatter when it is full. (On CUDA this reads the mask count, one small
    synchronisation per op; in exchange every op costs one pass over just the samples it applies to.)
    """
    idx = mask.nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        return x
    if n == x.shape[0]:
        out = fn(x, *params)
        return out if out is x else x.copy_(out)
    x[idx] = fn(x[idx], *(p[idx] for p in params))
    return x


def _check_modes(brightness_mode: str, saturation_mode: str) -> None:
    if brightness_mode not in ("additive", "multiplicative"):
        raise ValueError(f"brightness mode must be 'additive' or 'multiplicative', got {brightness_mode!r}")
    if saturation_mode not in ("blend", "hsv"):
        raise ValueError(f"saturation mode must be 'blend' or 'hsv', got {saturation_mode!r}")


def color_jitter(
    x: Tensor,
    apply: Tensor,
    brightness: Tensor | None,
    contrast: Tensor | None,
    saturation: Tensor | None,
    hue: Tensor | None,
    order: Tensor | None = None,
    brightness_mode: str = "additive",
    saturation_mode: str = "blend",
    *,
    inplace: bool = False,
) -> Tensor:
    """Colour jitter with per-sample parameters and a per-sample op order.

    Args:
        x: float ``[B, C, H, W]`` in [0, 1]. Left untouched unless ``inplace`` (then use the return value).
        apply: bool ``[B]``, which samples are jittered at all.
        brightness, contrast, saturation, hue: per-sample ``[B]`` parameters (delta or factor for brightness,
            see :func:`adjust_brightness`; factors for contrast/saturation; shift in turns for hue), or
            ``None`` to skip that op entirely.
        order: long ``[B, 4]``, a permutation of ``0..3`` per sample: ``order[i, s]`` is the op (index into
            :data:`JITTER_OPS`) applied to sample ``i`` in slot ``s``. ``None`` = the fixed order of
            :data:`JITTER_OPS`.
        saturation_mode: see :func:`adjust_saturation`; ``"hsv"`` is not affine, so it runs like hue, on the
            subset of samples that put it in the slot.

    The result equals applying, for each sample, its four ops one after the other in its own order, each
    followed by a clip to [0, 1] (the paper's code). Vectorised over samples, with a Python loop over the
    4 slots only: in a slot every sample gets one op, so brightness, contrast and saturation (all
    per-sample affine maps ``a*x + b + c*mean_c(x) + d*gray(x)``, with ``a=1, b=c=d=0`` for samples not
    using them in that slot) run as a single fused pass over the batch, and hue runs on the subset of
    samples that put it in that slot. The fused form is bit-identical to the separate ops.
    """
    _check_modes(brightness_mode, saturation_mode)
    x = _own(x, inplace)
    B, C = x.shape[:2]
    if C == 1:  # saturation / hue are identities on grayscale images
        saturation = hue = None
    affine_sat = saturation if saturation_mode == "blend" else None
    dev, dt = x.device, x.dtype
    apply = apply.to(dev)
    if order is None:
        order = torch.arange(4, device=dev).expand(B, 4)
    order = order.to(dev)

    def prm(p: Tensor) -> Tensor:
        return p.to(device=dev, dtype=dt)

    one, zero = torch.ones(B, device=dev, dtype=dt), torch.zeros(B, device=dev, dtype=dt)
    for slot in range(4):
        sel = [apply & (order[:, slot] == k) for k in range(4)]
        a, b, cm, d = one, zero, None, None
        if brightness is not None and bool(sel[0].any()):
            if brightness_mode == "additive":
                b = torch.where(sel[0], prm(brightness), zero)
            else:
                a = torch.where(sel[0], prm(brightness), a)
        if contrast is not None and bool(sel[1].any()):
            a = torch.where(sel[1], prm(contrast), a)
            cm = torch.where(sel[1], 1.0 - prm(contrast), zero)
        if affine_sat is not None and bool(sel[2].any()):
            a = torch.where(sel[2], prm(affine_sat), a)
            d = torch.where(sel[2], 1.0 - prm(affine_sat), zero)
        if a is not one or b is not zero:  # some sample uses a linear op in this slot
            # mean and gray are read from the slot's input, before x is updated
            shift = b.view(B, 1, 1, 1)
            if cm is not None:
                shift = x.mean(dim=(2, 3), keepdim=True).mul_(cm.view(B, 1, 1, 1)).add_(shift)
            gray = _gray(x).mul_(d.view(B, 1, 1, 1)) if d is not None else None
            x.mul_(a.view(B, 1, 1, 1)).add_(shift)
            if gray is not None:
                x.add_(gray)
            x.clamp_(0.0, 1.0)
        if saturation is not None and affine_sat is None:
            x = apply_subset(x, sel[2], lambda t, v: adjust_saturation(t, v, "hsv", inplace=True), saturation)
        if hue is not None:
            x = apply_subset(x, sel[3], lambda t, v: adjust_hue(t, v, inplace=True), hue)
    return x


# -------------------------------------------------------------------------------- grayscale, blur, ...
def to_grayscale(x: Tensor, *, inplace: bool = False) -> Tensor:
    """Luma replicated to 3 channels (``0.2989 R + 0.587 G + 0.114 B``). No-op for 1 channel."""
    if x.shape[1] == 1:
        return x
    gray = _gray(x)
    if inplace:
        return x.copy_(gray.expand_as(x))
    return gray.expand_as(x).contiguous()


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels ``[B, k]`` for per-sample ``sigma`` ``[B]`` (taps at -k//2..k//2)."""
    half = (kernel_size - 1) / 2.0
    t = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(
    x: Tensor, sigma: Tensor, kernel_size: int, padding: str = "reflect", *, inplace: bool = False
) -> Tensor:
    """Separable Gaussian blur with a per-sample σ (``[B]``), odd ``kernel_size``.

    ``padding``: ``"reflect"`` (default) or ``"zeros"``, the paper's code (a ``'SAME'`` convolution), which
    darkens the border rows and columns (by a fifth to two fifths at σ = 2, benchmarks/RESULTS.md section 16).

    Small kernels (<= 7 taps, i.e. outputs up to ~79 px) are applied as a sum of shifted slices weighted by
    per-sample taps (``addcmul``), which on CPU is several times faster than a grouped convolution with
    ``B * C`` groups; larger kernels use that grouped convolution, one per direction.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    if padding not in ("reflect", "zeros"):
        raise ValueError(f"blur padding must be 'reflect' or 'zeros', got {padding!r}")
    if kernel_size == 1:
        return x
    B, C, H, W = x.shape
    pad = kernel_size // 2
    kern = gaussian_kernels(sigma.to(device=x.device, dtype=torch.float32), kernel_size).to(x.dtype)
    mode = "reflect" if padding == "reflect" else "constant"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)  # [B, C, H + 2p, W + 2p]
    if kernel_size <= 7:
        taps = kern.view(B, kernel_size, 1, 1, 1).unbind(1)  # k tensors [B, 1, 1, 1]
        hor = xp[..., 0:W] * taps[0]  # [B, C, H + 2p, W]
        for i in range(1, kernel_size):
            hor.addcmul_(xp[..., i : i + W], taps[i])
        out = torch.mul(hor[:, :, 0:H, :], taps[0], out=x) if inplace else hor[:, :, 0:H, :] * taps[0]
        for i in range(1, kernel_size):
            out.addcmul_(hor[:, :, i : i + H, :], taps[i])
        return out
    kern = kern.repeat_interleave(C, dim=0)  # [B*C, k]
    xp = xp.reshape(1, B * C, H + 2 * pad, W + 2 * pad)
    xp = F.conv2d(xp, kern.view(B * C, 1, 1, kernel_size), groups=B * C)  # horizontal
    xp = F.conv2d(xp, kern.view(B * C, 1, kernel_size, 1), groups=B * C)  # vertical
    out = xp.view(B, C, H, W)
    return x.copy_(out) if inplace else out


def solarize(x: Tensor, threshold: float = 0.5, *, inplace: bool = False) -> Tensor:
    """``1 - x`` where ``x >= threshold`` (torchvision's convention), else ``x``.

    At the paper's threshold 0.5 this equals ``min(x, 1 - x) = 0.5 - |x - 0.5|`` (in-place arithmetic;
    ``torch.where`` is ~50x slower than an arithmetic pass on CPU); other thresholds use a 0/1 mask.
    """
    x = _own(x, inplace)
    if threshold == 0.5:
        return x.sub_(0.5).abs_().neg_().add_(0.5)
    step = (x >= threshold).to(x.dtype)
    return x.addcmul_(step, x.mul(-2.0).add_(1.0))


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(x - mean) / std`` per channel, in place; ``mean``/``std`` broadcastable to ``[1, C, 1, 1]``."""
    return x.sub_(mean).div_(std)

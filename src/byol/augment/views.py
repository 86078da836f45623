"""Two-view augmentation: the paper's pipeline, batched on the batch's device.

Order per view [paper App. B; DeepMind code]: random resized crop -> horizontal flip -> colour jitter
(random op order, p=0.8) -> grayscale (independent draw) -> Gaussian blur -> solarize -> clip to [0, 1] ->
normalize. Every random parameter is drawn per sample (one ``torch.rand(B, 18)`` per view), so two images
in a batch never share a crop or a jitter (unlike applying a torchvision transform to a whole batch, which
draws once per batch). Ops whose probability is 0 are skipped entirely; ops applied to a subset of the batch
run on that subset only.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from byol.augment import fused, ops
from byol.augment.spec import ViewSpec, blur_kernel_size
from byol.config.views import small_view_size, small_view_spec
from byol.errors import ConfigError

__all__ = ["TwoViewAugment", "apply_view", "eval_transform", "sample_view_params"]

# Columns of the per-view uniform draw matrix.
_CROP = slice(0, 4)
_FLIP, _JITTER, _BRIGHT, _CONTRAST, _SAT, _HUE = 4, 5, 6, 7, 8, 9
_ORDER = slice(10, 14)
_GRAY, _BLUR, _SIGMA, _SOLAR = 14, 15, 16, 17
_NDRAWS = 18


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"expected an image batch [B, C, H, W], got {getattr(images, 'shape', type(images))}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]} (shape {tuple(images.shape)})")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"expected uint8 (or float in [0, 1]) images, got {images.dtype}")


def _compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"unsupported augmentation dtype {dtype}")
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        # Half-precision elementwise/grid_sample kernels on CPU are dramatically slower than float32.
        raise ValueError(f"{dtype} augmentation is only supported on accelerators; use float32 on CPU")
    return dtype


def _to_float(images: Tensor, dtype: torch.dtype) -> Tensor:
    if images.dtype == torch.uint8:
        return images.to(dtype).mul_(1.0 / 255.0)
    return images.to(dtype)


def _mean_std(mean: Sequence[float], std: Sequence[float], C: int, device, dtype) -> tuple[Tensor, Tensor]:
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, C):
            raise ConfigError(f"normalization {name} has {len(v)} values but the images have {C} channels")
    if any(s <= 0 for s in std):
        raise ConfigError(f"normalization std must be positive, got {std}")
    m = torch.tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device, dtype=dtype).view(1, -1, 1, 1)
    return m, s


def _uniforms(B: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gdev = generator.device if generator is not None else device
    return torch.rand(B, _NDRAWS, generator=generator, device=gdev).to(device)


def _factor(u: Tensor, strength: float) -> Tensor:
    """Factor ~ U[max(0, 1 - s), 1 + s] (torchvision's ColorJitter ranges)."""
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    return lo + (hi - lo) * u


def sample_view_params(
    B: int, H: int, W: int, spec: ViewSpec, size: int, generator: torch.Generator | None, device,
    *, shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Draw every per-sample random parameter of one view. All tensors are on ``device``, length ``B``.

    ``shard=(r, n)``: the batch is part ``r`` of ``n`` equal parts of a global batch of ``n * B``; the draws
    are made for the whole global batch and part ``r`` is kept, so the views of a global batch do not
    depend on how many processes share it (and every process keeps the same generator state).

    Keys: ``boxes`` [B,4] (x0,y0,w,h px), ``flip``, ``jitter``, ``gray``, ``blur``, ``solarize`` (bool masks),
    ``brightness`` (delta if additive, factor if multiplicative), ``contrast``, ``saturation`` (factors),
    ``hue`` (turns), ``order`` [B,4] (jitter op per slot, indices into ``ops.JITTER_OPS``; fixed order if
    ``jitter_random_order`` is false), ``sigma`` (blur σ), ``blur_kernel`` (int).
    """
    device = torch.device(device)
    part, parts = shard
    u = _uniforms(B * parts, generator, device)
    if parts > 1:
        u = u[part * B : (part + 1) * B]
    p: dict[str, Any] = {}
    p["boxes"] = ops.sample_crop_boxes(B, H, W, spec.crop_scale, spec.crop_ratio, uniforms=u[:, _CROP])
    p["flip"] = u[:, _FLIP] < spec.flip_p
    p["jitter"] = u[:, _JITTER] < spec.jitter_p
    if spec.brightness_mode == "additive":
        p["brightness"] = spec.brightness * (2.0 * u[:, _BRIGHT] - 1.0)
    else:
        p["brightness"] = _factor(u[:, _BRIGHT], spec.brightness)
    p["contrast"] = _factor(u[:, _CONTRAST], spec.contrast)
    p["saturation"] = _factor(u[:, _SAT], spec.saturation)
    p["hue"] = spec.hue * (2.0 * u[:, _HUE] - 1.0)
    if spec.jitter_random_order:
        p["order"] = torch.argsort(u[:, _ORDER], dim=1)  # uniform random permutation per sample
    else:
        p["order"] = torch.arange(4, device=device).expand(B, 4)
    p["gray"] = u[:, _GRAY] < spec.gray_p
    p["blur"] = u[:, _BLUR] < spec.blur_p
    lo, hi = spec.blur_sigma
    p["sigma"] = lo + (hi - lo) * u[:, _SIGMA]
    p["blur_kernel"] = blur_kernel_size(size, spec.blur_kernel_frac)
    p["solarize"] = u[:, _SOLAR] < spec.solarize_p
    return p


def _view_from_float(
    x: Tensor, spec: ViewSpec, size: int, mean: Tensor, std: Tensor, params: dict[str, Any]
) -> Tensor:
    """Run one view's pipeline on float images in [0, 1] with already drawn ``params``."""
    C = x.shape[1]
    out = ops.resized_crop(x, params["boxes"], size, params["flip"], spec.interpolation)

    if spec.uses_jitter:
        out = ops.color_jitter(
            out,
            params["jitter"],
            params["brightness"] if spec.brightness > 0 else None,
            params["contrast"] if spec.contrast > 0 else None,
            params["saturation"] if spec.saturation > 0 else None,
            params["hue"] if spec.hue > 0 else None,
            order=params["order"] if spec.jitter_random_order else None,
            brightness_mode=spec.brightness_mode,
            saturation_mode=spec.saturation_mode,
            inplace=True,  # `out` is ours
        )
    if spec.gray_p > 0 and C == 3:
        out = ops.apply_subset(out, params["gray"], lambda t: ops.to_grayscale(t, inplace=True))
    if spec.blur_p > 0 and params["blur_kernel"] > 1:
        k, pad = params["blur_kernel"], spec.blur_padding
        out = ops.apply_subset(
            out, params["blur"], lambda t, s: ops.gaussian_blur(t, s, k, pad, inplace=True), params["sigma"]
        )
    if spec.solarize_p > 0:
        thr = spec.solarize_threshold
        out = ops.apply_subset(out, params["solarize"], lambda t: ops.solarize(t, thr, inplace=True))
    # Every op above already clips; this final clip is the paper's and costs one pass.
    out = out.clamp_(0.0, 1.0)
    return ops.normalize(out, mean, std)


def apply_view(
    images: Tensor,
    spec: ViewSpec,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator | None = None,
    *,
    return_params: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor | tuple[Tensor, dict[str, Any]]:
    """One random view of a uint8 batch ``[B, C, H, W]`` -> normalized ``[B, C, size, size]`` (``dtype``).

    Runs on ``images.device``; draws from ``generator`` (any device; default: the device's global RNG).
    With ``return_params=True`` also returns the per-sample parameter record (see
    :func:`sample_view_params`), which tests use to check the frequencies and ranges.
    Float input is accepted and taken to be in [0, 1].
    """
    _check_images(images)
    B, C, H, W = images.shape
    dt = _compute_dtype(images.device, dtype)
    m, s = _mean_std(mean, std, C, images.device, dt)
    params = sample_view_params(B, H, W, spec, size, generator, images.device)
    if fused.supports(images, spec, dt):
        out = fused.fused_view(images, spec, size, m, s, params)
    else:
        out = _view_from_float(_to_float(images, dt), spec, size, m, s, params)
    return (out, params) if return_params else out


class TwoViewAugment:
    """The two view distributions of BYOL, applied batched: ``aug(uint8 batch, generator) -> (v1, v2)``;
    with ``small_crops`` > 0, ``(v1, v2, *small)`` (multi-crop, Caron et al. 2020, section 3.2).

    Args:
        spec1, spec2: the view distributions (``paper_views()`` gives the paper's T, T').
        size: output side length.
        mean, std: per-channel normalization (length 1 or C).
        dtype: compute/output dtype; float16/bfloat16 are allowed on accelerators only.
        small_crops: small views per image after the two (default 0: none).
        small_spec: their distribution (default: ``spec1`` with a small crop scale, ``small_view_spec``).
        small_size: their side (default: half of ``size``, ``small_view_size``).

    No parameters, no state: the only randomness comes from ``generator`` (or the device's global RNG), so a
    seeded generator makes the views reproducible. The two views are drawn independently, view 1 first.
    """

    def __init__(
        self,
        spec1: ViewSpec,
        spec2: ViewSpec,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        dtype: torch.dtype = torch.float32,
        small_crops: int = 0,
        small_spec: ViewSpec | None = None,
        small_size: int | None = None,
    ) -> None:
        if not isinstance(spec1, ViewSpec) or not isinstance(spec2, ViewSpec):
            raise TypeError("spec1 and spec2 must be ViewSpec instances")
        if int(size) < 1:
            raise ConfigError(f"augmentation size must be a positive integer, got {size}")
        if int(small_crops) < 0 or (small_size is not None and int(small_size) < 1):
            raise ConfigError(f"small_crops must be >= 0 and small_size positive, got {small_crops}, {small_size}")
        self.spec1, self.spec2 = spec1, spec2
        self.size = int(size)
        self.small_crops = int(small_crops)
        self.small_spec = small_spec if small_spec is not None else small_view_spec(spec1)
        self.small_size = small_view_size(self.size, small_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.dtype = dtype
        self._norm_cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _norm(self, C: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (C, str(device), dtype)
        if key not in self._norm_cache:
            self._norm_cache[key] = _mean_std(self.mean, self.std, C, device, dtype)
        return self._norm_cache[key]

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None, *, return_params: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> tuple[Tensor, ...]:
        """``(view1, view2, *small)``: the two views, then ``small_crops`` small ones (none by default);
        with ``return_params`` each view's parameter record follows, in the same order.

        ``shard=(r, n)``: ``images`` are part ``r`` of ``n`` of a global batch (see :func:`sample_view_params`).
        The small views are drawn after the two, from the same generator, so without them the draws (and the
        two views) are what they always were."""
        _check_images(images)
        B, C, H, W = images.shape
        dt = _compute_dtype(images.device, self.dtype)
        m, s = self._norm(C, images.device, dt)
        jobs = [(self.spec1, self.size), (self.spec2, self.size)] + [(self.small_spec, self.small_size)] * self.small_crops
        params = [sample_view_params(B, H, W, spec, size, generator, images.device, shard=shard) for spec, size in jobs]
        if all(fused.supports(images, spec, dt) for spec, _ in jobs):
            # CPU fast path: one fused kernel per view, reading the uint8 batch directly
            views = [fused.fused_view(images, spec, size, m, s, p) for (spec, size), p in zip(jobs, params)]
        else:
            x = _to_float(images, dt)  # converted once, shared by every view
            views = [_view_from_float(x, spec, size, m, s, p) for (spec, size), p in zip(jobs, params)]
        return (*views, *params) if return_params else tuple(views)

    def from_crops(
        self, crops1: Tensor, crops2: Tensor, generator: torch.Generator | None = None, *, return_params: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, dict, dict]:
        """The two views of batches that are already each view's random crop at ``size x size`` (the
        streaming data path crops while decoding, from the whole image): every op but the crop, i.e. flip,
        colour jitter, grayscale, blur, solarize and normalisation, batched as in :meth:`__call__`.

        The parameters are drawn exactly as :meth:`__call__` draws them for a batch of the same size (the
        crop's draws are made and unused), so both paths consume ``generator`` alike; the crop becomes the
        identity box, which the resampling reproduces exactly (output pixel centres fall on input pixel
        centres), so the flip is still folded into it. :meth:`__call__` itself is unchanged. ``shard`` as
        in :meth:`__call__` (each process draws its part of the global batch's parameters). The stream decodes
        the two views' crops only: no small views here (``byol.train.config.check_small_crops_path``).
        """
        if self.small_crops:
            raise ConfigError("small views need the whole images (the cached data path): set data.stream=off")
        for crops in (crops1, crops2):
            _check_images(crops)
            if tuple(crops.shape[2:]) != (self.size, self.size):
                raise ValueError(f"crops must be {self.size}x{self.size}, got {tuple(crops.shape)}")
        if crops1.shape != crops2.shape:
            raise ValueError(f"the two views' crops differ in shape: {tuple(crops1.shape)} vs {tuple(crops2.shape)}")
        B, C, S, _ = crops1.shape
        dev = crops1.device
        dt = _compute_dtype(dev, self.dtype)
        m, s = self._norm(C, dev, dt)
        p1 = sample_view_params(B, S, S, self.spec1, self.size, generator, dev, shard=shard)
        p2 = sample_view_params(B, S, S, self.spec2, self.size, generator, dev, shard=shard)
        whole = torch.tensor([0.0, 0.0, float(S), float(S)], device=dev).expand(B, 4)
        views = []
        for crops, spec, p in ((crops1, self.spec1, p1), (crops2, self.spec2, p2)):
            p["boxes"] = whole
            if fused.supports(crops, spec, dt):
                views.append(fused.fused_view(crops, spec, self.size, m, s, p))
            else:
                views.append(_view_from_float(_to_float(crops, dt), spec, self.size, m, s, p))
        if return_params:
            return views[0], views[1], p1, p2
        return views[0], views[1]

    def backend(self, device: torch.device | str) -> str:
        """Which implementation makes the views on ``device``: the fused CPU kernel or the eager torch ops."""
        dt = self.dtype
        specs = (self.spec1, self.spec2, self.small_spec) if self.small_crops else (self.spec1, self.spec2)
        if all(fused.usable(device, spec, dt) for spec in specs):
            return "fused CPU kernel"
        return "torch ops"

    def __repr__(self) -> str:
        return (
            f"TwoViewAugment(spec1={self.spec1}, spec2={self.spec2}, size={self.size}, "
            f"mean={self.mean}, std={self.std}"
            + (f", small_crops={self.small_crops}, small_spec={self.small_spec}, small_size={self.small_size})"
               if self.small_crops else ")")
        )


def eval_transform(
    images: Tensor, size: int, mean: Sequence[float], std: Sequence[float], *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Deterministic eval view: resize the whole image to ``size x size`` (bilinear, antialiased) if needed,
    then normalize. uint8 ``[B, C, H, W]`` -> ``dtype`` ``[B, C, size, size]`` on the same device.

    Non-square images are resized without preserving the aspect ratio (no centre crop; the paper's
    ImageNet protocol centre-crops 224/256 of the short side, which callers can do beforehand).
    """
    _check_images(images)
    B, C, H, W = images.shape
    dt = _compute_dtype(images.device, dtype)
    m, s = _mean_std(mean, std, C, images.device, dt)
    x = _to_float(images, dt)
    if (H, W) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    elif images.dtype != torch.uint8:
        x = x.clone()
    return ops.normalize(x, m, s)

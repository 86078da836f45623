"""The view distributions T and T' of the BYOL paper, as plain data.

A :class:`ViewSpec` says *which* random augmentations a view uses, with what probability and strength.
It holds no tensors and no randomness; :func:`byol.augment.views.apply_view` turns it into images.

Defaults are the paper's T [Grill et al. 2020, App. B, Table 6; DeepMind ``byol/utils/augmentations.py``]:

=========================  ======  ======
op                          T       T'
=========================  ======  ======
random resized crop         1       1
horizontal flip             0.5     0.5
colour jitter (0.4, 0.4,    0.8     0.8
0.2, 0.1), random order
grayscale                   0.2     0.2
Gaussian blur, σ~U[0.1,2]   1.0     0.1
solarize at 0.5             0.0     0.2
=========================  ======  ======

Departures from the paper, all deliberate and configurable:

* ``interpolation`` defaults to ``"bilinear"``; the paper resizes crops with bicubic interpolation.
  Bilinear is cheaper and cannot overshoot; set ``interpolation="bicubic"`` for the paper's choice
  (results are clipped to [0, 1] afterwards).
* The blur kernel is sized relative to the *output* size (``blur_kernel_frac`` = 0.1, odd, at least 3),
  which gives the paper's 23 px at 224 px and 3 px at 32 px. σ is not rescaled with the image size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from byol.errors import ConfigError

__all__ = ["ViewSpec", "paper_views", "blur_kernel_size", "view_specs"]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_BRIGHTNESS_MODES = ("additive", "multiplicative")
_PAIR_FIELDS = ("crop_scale", "crop_ratio", "blur_sigma")
_PROB_FIELDS = ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p")


@dataclass(frozen=True)
class ViewSpec:
    """Probabilities and strengths of one view distribution. Defaults: the paper's T.

    Attributes:
        crop_scale: range of the crop's area as a fraction of the image area (sampled uniformly).
        crop_ratio: range of the crop's aspect ratio w/h (sampled log-uniformly).
        flip_p: probability of a horizontal flip.
        jitter_p: probability of applying colour jitter (all four ops together).
        brightness: additive: delta ~ U[-b, b] (the paper's code); multiplicative: factor ~ U[1-b, 1+b].
        contrast: blend factor ~ U[1-c, 1+c] with the per-image, per-channel mean.
        saturation: blend factor ~ U[1-s, 1+s] with the grayscale image.
        hue: hue shift ~ U[-h, h], in turns (h <= 0.5).
        jitter_random_order: apply the four jitter ops in a random order drawn per sample.
        gray_p: probability of converting to grayscale (drawn independently of jitter).
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur's σ in output pixels (sampled uniformly).
        blur_kernel_frac: kernel size as a fraction of the output size (rounded to odd, at least 3).
        solarize_p: probability of solarization.
        solarize_threshold: pixels >= threshold (in [0, 1]) are inverted.
        interpolation: "bilinear" (default), "bicubic" (the paper's) or "nearest".
        brightness_mode: "additive" (the paper's code) or "multiplicative" (torchvision's).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_random_order: bool = True
    gray_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5
    interpolation: str = "bilinear"
    brightness_mode: str = "additive"

    def __post_init__(self) -> None:
        # Normalise sequences to tuples of floats (YAML gives lists) and numbers to float, then check ranges.
        for name in _PAIR_FIELDS:
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        for f in fields(self):
            if f.name in _PAIR_FIELDS or f.name in ("interpolation", "brightness_mode", "jitter_random_order"):
                continue
            object.__setattr__(self, f.name, _number(f.name, getattr(self, f.name)))
        if not isinstance(self.jitter_random_order, bool):
            raise ConfigError(f"jitter_random_order must be true or false, got {self.jitter_random_order!r}")
        for name in _PROB_FIELDS:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {p}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ConfigError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0.0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.brightness_mode == "additive" and self.brightness > 1.0:
            raise ConfigError(f"additive brightness must be in [0, 1], got {self.brightness}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"hue must be in [0, 0.5] (turns), got {self.hue}")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi:
            raise ConfigError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")
        if not 0.0 < self.blur_kernel_frac <= 1.0:
            raise ConfigError(f"blur_kernel_frac must be in (0, 1], got {self.blur_kernel_frac}")
        if not 0.0 <= self.solarize_threshold <= 1.0:
            raise ConfigError(f"solarize_threshold must be in [0, 1], got {self.solarize_threshold}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {list(_INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.brightness_mode not in _BRIGHTNESS_MODES:
            raise ConfigError(
                f"brightness_mode must be one of {list(_BRIGHTNESS_MODES)}, got {self.brightness_mode!r}"
            )

    # ------------------------------------------------------------------ conversions
    def replace(self, **changes: Any) -> "ViewSpec":
        """A copy with some fields changed (validated; unknown names raise ConfigError)."""
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-friendly dict (pairs become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ViewSpec":
        """Build from a (partial) dict; missing keys take the paper-T defaults, unknown keys are errors."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a view spec must be a mapping of field names to values, got {type(d).__name__}")
        _check_keys(d)
        return cls(**dict(d))

    @property
    def uses_jitter(self) -> bool:
        return self.jitter_p > 0 and (self.brightness > 0 or self.contrast > 0 or self.saturation > 0 or self.hue > 0)


def _check_keys(d: Mapping[str, Any]) -> None:
    valid = [f.name for f in fields(ViewSpec)]
    for key in d:
        if key not in valid:
            raise ConfigError(f"unknown augmentation key {key!r}; valid keys: {', '.join(valid)}")


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _pair(name: str, v: Any) -> tuple[float, float]:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 2:
        raise ConfigError(f"{name} must be a pair [lo, hi], got {v!r}")
    return (_number(name, v[0]), _number(name, v[1]))


def blur_kernel_size(size: int, frac: float) -> int:
    """Odd blur kernel size for an output of ``size`` px: 2*floor(frac*size/2)+1, at least 3.

    224 px -> 23 (the paper's kernel), 96 -> 9, 64 -> 7, 32 -> 3, 28 -> 3. Capped so that the reflect
    padding (k // 2) stays below the image size.
    """
    k = max(3, 2 * int(math.floor(frac * size / 2)) + 1)
    return min(k, 2 * max(int(size), 1) - 1) if size > 1 else 1


def paper_views() -> tuple[ViewSpec, ViewSpec]:
    """The paper's asymmetric pair (T, T'): blur 1.0 / 0.1, solarize 0.0 / 0.2, all else equal."""
    t = ViewSpec()
    t_prime = ViewSpec(blur_p=0.1, solarize_p=0.2)
    return t, t_prime


def _merged(base: Mapping[str, Any], *updates: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for u in updates:
        out.update(u or {})
    return out


def view_specs(
    view1: Mapping[str, Any] | None = None, view2: Mapping[str, Any] | None = None, both: Mapping[str, Any] | None = None
) -> tuple[ViewSpec, ViewSpec]:
    """The paper's (T, T') with overrides: ``both`` applies to each view, then ``view1`` / ``view2``
    (the ``views`` section of a config). Unknown keys and bad values raise ConfigError."""
    t1, t2 = paper_views()
    return (ViewSpec.from_dict(_merged(t1.to_dict(), both or {}, view1 or {})),
            ViewSpec.from_dict(_merged(t2.to_dict(), both or {}, view2 or {})))

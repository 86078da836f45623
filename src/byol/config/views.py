"""The view distributions T and T' of the BYOL paper, as plain data (no torch import).

A :class:`ViewSpec` says *which* random augmentations a view uses, with what probability and strength.
It holds no tensors and no randomness; :func:`byol.augment.views.apply_view` turns it into images.

Why this module sits beside :mod:`byol.config` and not in :mod:`byol.augment`: the config checks the
``views`` section when it is loaded, so a bad ``--set views.view1.blur_p=2`` fails before any data is
read, with the same check and message the augmentations would give. The config layer may import neither
torch nor anything above it, and importing ``byol.augment.spec`` runs ``byol/augment/__init__.py``,
which imports torch. So the spec lives here, importing only :mod:`byol.errors`;
:mod:`byol.augment.spec` re-exports it, so ``from byol.augment import ViewSpec`` keeps working.

Every field has one check (:data:`_CHECKS`), used both by ``ViewSpec(...)`` and by the config, which
only changes the key the message names (``flip_p`` vs ``views.view1.flip_p``).

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
* ``saturation_mode`` defaults to ``"blend"`` (torchvision's: blend with the grayscale image); the paper's
  code scales S in HSV (``tf.image.adjust_saturation``): ``"hsv"``.
* ``blur_padding`` defaults to ``"reflect"``; the paper's code convolves with ``'SAME'`` padding, i.e.
  zeros outside the image, which darkens the border: ``"zeros"``. Both differences are measured in
  ``benchmarks/RESULTS.md`` (section 16) and listed in docs/departures.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from byol.errors import ConfigError

__all__ = ["ViewSpec", "paper_views", "view_specs", "VIEWS_KEY", "SMALL_CROP_SCALE", "small_view_spec", "small_view_size"]

#: Where the views live in a config; :func:`view_specs` names bad keys below it (``views.view1.flip_p``).
VIEWS_KEY = "views"


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
        saturation: factor ~ U[1-s, 1+s] (see ``saturation_mode``).
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
        saturation_mode: "blend" (with the grayscale image, torchvision's) or "hsv" (S scaled in HSV and
            clipped, the paper's code).
        blur_padding: "reflect" or "zeros" (the paper's code: its 'SAME' convolution pads with zeros).
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
    saturation_mode: str = "blend"
    blur_padding: str = "reflect"

    def __post_init__(self) -> None:
        # Normalise (YAML gives lists for pairs and ints for floats) and range-check every field.
        for f in fields(self):
            object.__setattr__(self, f.name, _CHECKS[f.name](getattr(self, f.name), f.name))
        if self.brightness_mode == "additive" and self.brightness > 1.0:
            raise ConfigError(f"brightness must be in [0, 1] when brightness_mode is additive, got {self.brightness}")

    # ------------------------------------------------------------------ conversions
    def replace(self, **changes: Any) -> ViewSpec:
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
    def from_dict(cls, d: Mapping[str, Any]) -> ViewSpec:
        """Build from a (partial) dict; missing keys take the paper-T defaults, unknown keys are errors."""
        _check_mapping(d, "a view spec")
        _check_keys(d)
        return cls(**dict(d))

    @property
    def uses_jitter(self) -> bool:
        return self.jitter_p > 0 and (self.brightness > 0 or self.contrast > 0 or self.saturation > 0 or self.hue > 0)


# ---------------------------------------------------------------------------------------------
# one check per field: (value, key to name in the message) -> normalised value

_Check = Callable[[Any, str], Any]


def _number(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ConfigError(f"{key} must be a finite number, got {v!r}")
    return float(v)


def _in(lo: float, hi: float, what: str, *, open_lo: bool = False) -> _Check:
    """A number in [lo, hi] ((lo, hi] with ``open_lo``); ``what`` describes the range in the message."""

    def check(v: Any, key: str) -> float:
        x = _number(v, key)
        if not (lo < x if open_lo else lo <= x) or x > hi:
            raise ConfigError(f"{key} must be {what}, got {v!r}")
        return x

    return check


def _range(hi: float, what: str) -> _Check:
    """A pair ``[lo, hi']`` with ``0 < lo <= hi' <= hi``."""

    def check(v: Any, key: str) -> tuple[float, float]:
        if isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__len__") or len(v) != 2:
            raise ConfigError(f"{key} must be a pair [lo, hi], got {v!r}")
        lo, up = _number(v[0], key), _number(v[1], key)
        if not 0.0 < lo <= up <= hi:
            raise ConfigError(f"{key} must satisfy {what}, got {[v[0], v[1]]}")
        return lo, up

    return check


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def _choice(*options: str) -> _Check:
    def check(v: Any, key: str) -> str:
        if v not in options:
            raise ConfigError(f"{key} must be one of {', '.join(options)}, got {v!r}")
        return str(v)

    return check


_PROBABILITY = _in(0.0, 1.0, "a probability in [0, 1]")
_STRENGTH = _in(0.0, math.inf, ">= 0")

_CHECKS: dict[str, _Check] = {
    "crop_scale": _range(1.0, "0 < lo <= hi <= 1"),
    "crop_ratio": _range(math.inf, "0 < lo <= hi"),
    "flip_p": _PROBABILITY,
    "jitter_p": _PROBABILITY,
    "brightness": _STRENGTH,
    "contrast": _STRENGTH,
    "saturation": _STRENGTH,
    "hue": _in(0.0, 0.5, "in [0, 0.5] (turns)"),
    "jitter_random_order": _bool,
    "gray_p": _PROBABILITY,
    "blur_p": _PROBABILITY,
    "blur_sigma": _range(math.inf, "0 < lo <= hi"),
    "blur_kernel_frac": _in(0.0, 1.0, "in (0, 1]", open_lo=True),
    "solarize_p": _PROBABILITY,
    "solarize_threshold": _in(0.0, 1.0, "in [0, 1]"),
    "interpolation": _choice("bilinear", "bicubic", "nearest"),
    "brightness_mode": _choice("additive", "multiplicative"),
    "saturation_mode": _choice("blend", "hsv"),
    "blur_padding": _choice("reflect", "zeros"),
}


def _check_mapping(d: Any, what: str) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{what} must be a mapping of field names to values, got {type(d).__name__}")


def _check_keys(d: Mapping[str, Any], prefix: str = "") -> None:
    valid = [f.name for f in fields(ViewSpec)]
    for key in d:
        if key not in valid:
            raise ConfigError(f"unknown view key '{prefix}{key}'; valid keys: {', '.join(valid)}")


def _checked(d: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """The overrides ``d`` of the config section ``key``, each value checked and normalised."""
    if d is None:
        return {}
    _check_mapping(d, key)
    _check_keys(d, key + ".")
    return {name: _CHECKS[name](value, f"{key}.{name}") for name, value in d.items()}


def paper_views() -> tuple[ViewSpec, ViewSpec]:
    """The paper's asymmetric pair (T, T'): blur 1.0 / 0.1, solarize 0.0 / 0.2, all else equal."""
    t = ViewSpec()
    t_prime = ViewSpec(blur_p=0.1, solarize_p=0.2)
    return t, t_prime


def view_specs(
    view1: Mapping[str, Any] | None = None, view2: Mapping[str, Any] | None = None, both: Mapping[str, Any] | None = None
) -> tuple[ViewSpec, ViewSpec]:
    """The paper's (T, T') with overrides: ``both`` applies to each view, then ``view1`` / ``view2``
    (the ``views`` section of a config). An unknown key or a bad value raises ConfigError naming it
    (``views.both.hue``); a bad combination names the view (``views.view2: brightness ...``)."""
    shared = _checked(both, f"{VIEWS_KEY}.both")
    specs = []
    for name, base, own in (("view1", paper_views()[0], view1), ("view2", paper_views()[1], view2)):
        key = f"{VIEWS_KEY}.{name}"
        changes = {**shared, **_checked(own, key)}
        try:
            specs.append(dataclasses.replace(base, **changes))
        except ConfigError as e:  # only a combination of fields fails here: each value passed its check
            raise ConfigError(f"{key}: {e}") from None
    return specs[0], specs[1]


#: The small views' crop scale by default: SwAV's multi-crop (Caron et al. 2020, section 3.2 and App.: small
#: crops of scale [0.05, 0.14], the global ones of [0.14, 1]). The global views keep the BYOL paper's
#: [0.08, 1] here: set ``views.both.crop_scale: [0.14, 1]`` for SwAV's global crops.
SMALL_CROP_SCALE = (0.05, 0.14)


def small_view_spec(t: ViewSpec, small: Mapping[str, Any] | None = None) -> ViewSpec:
    """The small (multi-crop) views' distribution: view 1's ``t`` with :data:`SMALL_CROP_SCALE`, then the
    ``views.small`` overrides (a bad key or value raises ConfigError naming ``views.small.<key>``)."""
    key = f"{VIEWS_KEY}.small"
    changes = {"crop_scale": SMALL_CROP_SCALE, **_checked(small, key)}
    try:
        return dataclasses.replace(t, **changes)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None


def small_view_size(view_size: int, small_size: int | None) -> int:
    """The small views' side: ``views.small_size``, or half the global views' (16 px at 32, 112 at 224;
    SwAV uses 96 at 224), at least 1."""
    return int(small_size) if small_size is not None else max(1, int(view_size) // 2)

"""ViewSpec: defaults are the paper's T, conversions round-trip, bad values are ConfigErrors."""

import dataclasses

import pytest

from byol.augment import ViewSpec, paper_views, view_specs
from byol.augment.spec import blur_kernel_size
from byol.errors import ConfigError


def test_defaults_are_paper_T_and_T_prime_differs_only_in_blur_and_solarize():
    t, tp = paper_views()
    assert t == ViewSpec()
    assert t.crop_scale == (0.08, 1.0) and t.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert (t.flip_p, t.jitter_p, t.gray_p) == (0.5, 0.8, 0.2)
    assert (t.brightness, t.contrast, t.saturation, t.hue) == (0.4, 0.4, 0.2, 0.1)
    assert (t.blur_p, t.solarize_p) == (1.0, 0.0)
    assert (tp.blur_p, tp.solarize_p) == (0.1, 0.2)
    diff = {k for k, v in t.to_dict().items() if tp.to_dict()[k] != v}
    assert diff == {"blur_p", "solarize_p"}
    assert t.brightness_mode == "additive" and t.jitter_random_order
    assert (t.saturation_mode, t.blur_padding) == ("blend", "reflect")  # byol's defaults, not the paper's code's


def test_roundtrip_and_lists_accepted():
    t = ViewSpec(crop_scale=[0.2, 1], blur_p=0.5)
    assert t.crop_scale == (0.2, 1.0)
    d = t.to_dict()
    assert d["crop_scale"] == [0.2, 1.0]
    assert ViewSpec.from_dict(d) == t
    assert ViewSpec.from_dict({}) == ViewSpec()
    assert hash(t) == hash(ViewSpec.from_dict(d))


def test_replace():
    t = ViewSpec().replace(solarize_p=0.3)
    assert t.solarize_p == 0.3 and t.blur_p == 1.0
    with pytest.raises(ConfigError):
        ViewSpec().replace(solarize_p=1.5)
    with pytest.raises(ConfigError, match="bogus"):
        ViewSpec().replace(bogus=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ViewSpec().flip_p = 0.1  # type: ignore[misc]


def test_unknown_key_names_key_and_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        ViewSpec.from_dict({"blur_prob": 0.5})
    msg = str(e.value)
    assert "blur_prob" in msg and "blur_p" in msg and "solarize_threshold" in msg


@pytest.mark.parametrize(
    "kw",
    [
        {"flip_p": 1.5},
        {"gray_p": -0.1},
        {"solarize_p": "high"},
        {"jitter_p": True},
        {"crop_scale": (0.0, 1.0)},
        {"crop_scale": (0.5, 0.2)},
        {"crop_scale": (0.5, 1.2)},
        {"crop_scale": 0.5},
        {"crop_ratio": (0.0, 1.0)},
        {"blur_sigma": (2.0, 1.0)},
        {"hue": 0.7},
        {"contrast": -0.1},
        {"brightness": 1.5},
        {"blur_kernel_frac": 0.0},
        {"solarize_threshold": 2.0},
        {"interpolation": "lanczos"},
        {"brightness_mode": "gamma"},
        {"saturation_mode": "hsl"},
        {"blur_padding": "same"},
        {"jitter_random_order": "yes"},
        {"flip_p": float("nan")},
    ],
)
def test_bad_values_raise_config_error(kw):
    with pytest.raises(ConfigError):
        ViewSpec(**kw)
    with pytest.raises(ConfigError):
        ViewSpec.from_dict(kw)


def test_the_reference_modes_reach_both_views_from_the_config_section():
    t, tp = view_specs(both={"saturation_mode": "hsv", "blur_padding": "zeros"})
    assert (t.saturation_mode, t.blur_padding, tp.saturation_mode, tp.blur_padding) == ("hsv", "zeros") * 2
    with pytest.raises(ConfigError, match=r"views\.view2\.blur_padding"):
        view_specs(view2={"blur_padding": "edge"})


def test_multiplicative_brightness_may_exceed_one():
    assert ViewSpec(brightness=1.5, brightness_mode="multiplicative").brightness == 1.5


def test_from_dict_rejects_non_mapping():
    with pytest.raises(ConfigError):
        ViewSpec.from_dict([("flip_p", 0.5)])  # type: ignore[arg-type]


@pytest.mark.parametrize("size,k", [(224, 23), (96, 9), (64, 7), (32, 3), (28, 3), (8, 3), (2, 3)])
def test_blur_kernel_size(size, k):
    assert blur_kernel_size(size, 0.1) == k
    assert blur_kernel_size(size, 0.1) % 2 == 1

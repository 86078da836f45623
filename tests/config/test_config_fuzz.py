"""Property-based fuzz of the config loader: whatever a user writes (YAML files, ``--set`` overrides, the
sections and keys of the real schema with values of any type), loading ends in a config or in one
ConfigError line, never in another exception (which the CLI would show as a traceback)."""

from __future__ import annotations

import dataclasses
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byol.train.config import PretrainConfig, build_config
from byol.errors import ConfigError
from byol.methods.registry import section_keys

SECTIONS = {f.name: typing.get_type_hints(PretrainConfig)[f.name] for f in dataclasses.fields(PretrainConfig)}
KEYS = {name: [f.name for f in dataclasses.fields(tp)] for name, tp in SECTIONS.items() if dataclasses.is_dataclass(tp)}
KEYS["method"] = sorted(section_keys())  # every method's section (and older names), not only the shared base
VIEW_KEYS = ["crop_scale", "crop_ratio", "flip_p", "jitter_p", "brightness", "gray_p", "blur_p", "blur_sigma",
             "solarize_p", "size", "bogus"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["10m", "1h30m", "0s", "-5m", "auto", "off", "cosine", "lars",
                                                           "sgd", "convnet", "byol", "moco", "simclr", "1e-3"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def config_dicts(draw):
    out: dict = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "optm", "extra"]), max_size=4, unique=True)):
        if section == "description":
            out[section] = draw(values)
            continue
        keys = KEYS.get(section, []) + ["bogus", "base_lrr"]
        if section == "views":
            out[section] = {v: draw(st.dictionaries(st.sampled_from(VIEW_KEYS), values, max_size=3))
                            for v in draw(st.lists(st.sampled_from(["view1", "view2", "both"]), max_size=2, unique=True))}
        else:
            out[section] = draw(st.one_of(values, st.dictionaries(st.sampled_from(keys), values, max_size=4)))
    return out


def _load(**kwargs) -> None:
    try:
        build_config(**kwargs)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_dicts())
def test_any_config_mapping_loads_or_fails_with_one_config_error(data) -> None:
    _load(extra=data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30),
                          st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(list(KEYS)),
                                    st.sampled_from(sorted({k for ks in KEYS.values() for k in ks})),
                                    st.text(max_size=12))), max_size=4))
def test_any_set_override_loads_or_fails_with_one_config_error(overrides) -> None:
    _load(overrides=overrides)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_any_yaml_file_loads_or_fails_with_one_config_error(tmp_path_factory, text) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    _load(files=[path])

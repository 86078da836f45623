"""Each method owns its config section: a dataclass registered with the method, checked in one place from
its fields' metadata, parsed by ``method.name``; keys of other methods are dropped, unknown keys refused."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from byol.config import MethodConfig, find_preset, to_dict
from byol.config.checks import ranged
from byol.errors import ConfigError
from byol.methods import CONFIGS, METHODS, BYOLConfig, MoCoConfig, SimCLRConfig, build_method, config_class
from byol.methods.registry import register
from byol.models import build_backbone
from byol.train.config import build_config, pretrain_config, stored_as_now

TINY = find_preset("tiny")


def _load(*overrides: str, method: str | None = None):
    extra = {"method": {"name": method}} if method else None
    return build_config(files=[TINY], overrides=list(overrides), extra=extra)


def test_each_method_has_its_own_section_with_todays_defaults():
    assert config_class("byol") is BYOLConfig and config_class("moco") is MoCoConfig
    assert to_dict(BYOLConfig()) == {
        "name": "byol", "proj_hidden": 4096, "proj_dim": 256, "pred_hidden": 4096, "tau_base": 0.996,
        "target_init": "random", "use_predictor": True, "tau_schedule": "cosine", "target": "ema",
        "negative_weight": 0.0, "temperature": None, "predictor": "mlp", "directpred_rho": 0.3,
        "directpred_eps": 0.1, "directpred_every": 1}
    assert to_dict(SimCLRConfig()) == {"name": "simclr", "proj_hidden": 4096, "proj_dim": 256, "temperature": None}
    assert to_dict(MoCoConfig()) == {"name": "moco", "proj_hidden": 4096, "proj_dim": 256, "temperature": None,
                                     "queue_size": 65536, "tau_base": 0.999, "tau_schedule": "constant",
                                     "split_bn_groups": 8}


@pytest.mark.parametrize("cls, key, value, message", [
    (BYOLConfig, "tau_base", 1.5, "method.tau_base must be in [0, 1], got 1.5"),
    (BYOLConfig, "pred_hidden", 0, "method.pred_hidden must be positive, got 0"),
    (BYOLConfig, "negative_weight", -1.0, "method.negative_weight must be >= 0, got -1.0"),
    (BYOLConfig, "target", "frozen", "method.target must be one of ema, online-sg, online, got 'frozen'"),
    (BYOLConfig, "target_init", "zeros", "method.target_init must be one of random, copy, got 'zeros'"),
    (MoCoConfig, "tau_schedule", "cosin", "method.tau_schedule must be one of cosine, constant, got 'cosin' "
                                          "(did you mean 'cosine'?)"),
    (MoCoConfig, "queue_size", 0, "method.queue_size must be positive, got 0"),
    (MoCoConfig, "split_bn_groups", 0, "method.split_bn_groups must be positive, got 0"),
    (SimCLRConfig, "temperature", 0.0, "method.temperature must be positive, got 0.0"),
    (SimCLRConfig, "proj_dim", -4, "method.proj_dim must be positive, got -4"),
])
def test_a_section_built_in_code_or_loaded_is_checked_by_its_fields(cls, key, value, message):
    with pytest.raises(ConfigError) as e:
        cls(**{key: value})
    assert str(e.value) == message
    with pytest.raises(ConfigError) as e:
        _load(f"method.{key}={value}", method=cls().name)
    assert str(e.value) == message


def test_another_methods_keys_are_dropped_and_config_holds_the_chosen_methods_only():
    cfg = _load("method.queue_size=7", method="simclr")  # tiny is a BYOL preset: pred_hidden, tau_base, ...
    assert type(cfg.method) is SimCLRConfig
    assert to_dict(cfg)["method"] == {"name": "simclr", "proj_hidden": 32, "proj_dim": 16, "temperature": None}
    cfg = _load("method.queue_size=7", "method.tau_base=0.9", method="moco")  # the command line's own keys count
    assert (cfg.method.queue_size, cfg.method.tau_base, cfg.method.tau_schedule) == (7, 0.9, "constant")


def test_a_layer_written_for_another_method_does_not_set_this_ones_knobs():
    # tiny sets BYOL's tau_base 0.99 (and proj_hidden 32): MoCo keeps its own m, the heads are shared
    cfg = _load(method="moco")
    assert (cfg.method.tau_base, cfg.method.proj_hidden) == (0.999, 32)
    assert _load().method.tau_base == 0.99


@pytest.mark.parametrize("override, suggestion", [("method.tau_bse=0.9", "method.tau_base"),
                                                  ("method.queue_sise=8", "method.queue_size")])
def test_a_key_no_method_has_is_an_error_with_a_did_you_mean(override, suggestion):
    with pytest.raises(ConfigError) as e:
        _load(override)
    assert f"did you mean '{suggestion}'?" in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_method_is_an_error_with_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown method 'mocco' \(method.name\) \(did you mean 'moco'\?\)"):
        _load(method="mocco")


def test_legacy_momentum_is_read_as_mocos_constant_tau_base():
    cfg = _load("method.momentum=0.95", method="moco")
    assert (cfg.method.tau_base, cfg.method.tau_schedule) == (0.95, "constant")
    with pytest.raises(ConfigError, match=r"method.tau_base must be in \[0, 1\]"):
        _load("method.momentum=1.5", method="moco")
    # a BYOL run's old config.yaml had MoCo's momentum too: it is dropped, BYOL's own tau stays
    assert _load("method.momentum=0.5").method.tau_base == 0.99


def _old_layout(name: str) -> dict:
    """The method section as every run directory written before stored it (one class, every key)."""
    return {"name": name, "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32, "tau_base": 0.996,
            "target_init": "copy", "use_predictor": True, "tau_schedule": "cosine", "target": "ema",
            "negative_weight": 0.0, "temperature": None, "queue_size": 64, "momentum": 0.99, "split_bn_groups": 2}


@pytest.mark.parametrize("name", ["byol", "simclr", "moco"])
def test_a_config_written_before_reads_back_as_the_same_run(name):
    stored = {**to_dict(_load(method=name)), "method": _old_layout(name)}
    cfg = pretrain_config(stored)
    expect = {"byol": {"tau_base": 0.996, "tau_schedule": "cosine", "pred_hidden": 32},
              "simclr": {"temperature": None},
              "moco": {"tau_base": 0.99, "tau_schedule": "constant", "queue_size": 64, "split_bn_groups": 2}}[name]
    assert {k: getattr(cfg.method, k) for k in expect} == expect
    # a resume compares the stored config as it is written now: no difference is reported
    assert stored_as_now(stored) == to_dict(cfg)


@dataclass
class ToyConfig(MethodConfig):
    name: str = "toy"
    gain: float = ranged(1.0)  #: scales the loss


class Toy(nn.Module):
    def __init__(self, backbone_factory, config: ToyConfig | None = None) -> None:
        super().__init__()
        self.config = config or ToyConfig()
        self.encoder = backbone_factory()
        self.projector = nn.Linear(int(self.encoder.feature_dim), self.config.proj_dim)

    def trainable_modules(self):
        return [self.encoder, self.projector]

    def forward(self, view1, view2):
        z1, z2 = self.projector(self.encoder(view1)), self.projector(self.encoder(view2))
        return {"loss": self.config.gain * (z1 - z2).pow(2).mean(), "proj": z1.detach()}

    def after_step(self, step, total_steps):
        return {"gain": self.config.gain}


@pytest.fixture
def toy(monkeypatch):
    """The toy method registered as ``toy`` for one test (the registry as it was afterwards)."""
    monkeypatch.setattr("byol.methods.registry.METHODS", dict(METHODS))
    monkeypatch.setattr("byol.methods.registry.CONFIGS", dict(CONFIGS))
    register("toy", config=ToyConfig)(Toy)
    return Toy


def test_a_method_defined_outside_src_registers_its_section_end_to_end(toy):
    cfg = _load("method.gain=2.5", "method.proj_dim=4", method="toy")
    assert type(cfg.method) is ToyConfig and (cfg.method.gain, cfg.method.proj_dim) == (2.5, 4)
    assert to_dict(cfg)["method"] == {"name": "toy", "proj_hidden": 32, "proj_dim": 4, "gain": 2.5}
    with pytest.raises(ConfigError, match=r"^method.gain must be positive, got 0.0$"):
        _load("method.gain=0", method="toy")
    assert _load("method.gain=3").method == _load().method  # BYOL drops the toy's key
    m = build_method(cfg.method, lambda: build_backbone("convnet", in_channels=3, widths=[4]))
    assert isinstance(m, Toy) and torch.isfinite(m(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))["loss"])
    assert m.after_step(0, 10) == {"gain": 2.5}


def test_registering_a_section_whose_name_is_another_methods_is_refused():
    with pytest.raises(ValueError, match="not the registered 'other'"):
        register("other", config=ToyConfig)
    assert "other" not in METHODS and dataclasses.is_dataclass(ToyConfig)

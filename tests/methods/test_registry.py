"""The method registry: the only way the engine and the CLI reach a method."""

import pytest
import torch
from torch import nn

from byol.config import MethodConfig
from byol.train.config import build_config
from byol.errors import ConfigError
from byol.methods import BYOL, CONFIGS, METHODS, BYOLConfig, build_method, register
from byol.models import build_backbone


def _factory(calls):
    def make():
        calls.append(1)
        return build_backbone("convnet", in_channels=1, widths=[4, 8])

    return make


def test_byol_is_registered_and_built_by_name():
    calls = []
    m = build_method(BYOLConfig(name="byol", proj_hidden=8, proj_dim=4, pred_hidden=8, target_init="random"),
                     _factory(calls))
    assert isinstance(m, BYOL) and METHODS["byol"] is BYOL
    assert len(calls) == 2  # online and a freshly initialised target: the factory is called per network
    assert m.projector[0].out_features == 8 and m.predictor[-1].out_features == 4


def test_copy_target_calls_the_factory_once():
    calls = []
    build_method(BYOLConfig(proj_hidden=8, proj_dim=4, pred_hidden=8, target_init="copy"), _factory(calls))
    assert len(calls) == 1


def test_unknown_method_names_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*byol"):
        build_method(MethodConfig(name="nope"), _factory([]))


def test_register_a_method_and_refuse_a_second_class_under_the_same_name(monkeypatch):
    monkeypatch.setattr("byol.methods.registry.METHODS", dict(METHODS))
    monkeypatch.setattr("byol.methods.registry.CONFIGS", dict(CONFIGS))
    from byol.methods import registry

    @registry.register("probe-only")
    class Probe(nn.Module):
        def __init__(self, backbone_factory, config):
            super().__init__()
            self.encoder, self.config = backbone_factory(), config

    cfg = MethodConfig(name="probe-only")
    m = registry.build_method(cfg, _factory([]))
    assert isinstance(m, Probe) and m.config is cfg
    with pytest.raises(ValueError, match="already registered"):
        registry.register("probe-only")(type("Other", (nn.Module,), {}))


def test_heads_in_the_model_section_of_older_configs_are_read_as_method_keys():
    cfg = build_config(extra={"model": {"proj_hidden": 64, "proj_dim": 32}},
                       overrides=["model.pred_hidden=48"])
    assert (cfg.method.proj_hidden, cfg.method.proj_dim, cfg.method.pred_hidden) == (64, 32, 48)
    # the new place wins over the old one
    cfg = build_config(extra={"model": {"proj_dim": 32}, "method": {"proj_dim": 16}})
    assert cfg.method.proj_dim == 16
    assert not hasattr(cfg.model, "proj_dim")


def test_bad_target_init_is_a_config_error():
    with pytest.raises(ConfigError, match="target_init"):
        BYOL(lambda: build_backbone("convnet", in_channels=1, widths=[4]), BYOLConfig(target_init="zeros"))

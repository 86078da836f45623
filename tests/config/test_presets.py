"""Every shipped preset parses, validates and is found by name; the paper preset keeps the paper's numbers."""

from __future__ import annotations

import pytest

from byol.config import PRESETS_DIR as CONFIG_DIR
from byol.config import find_preset
from byol.train.config import build_config
from byol.errors import ConfigError

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def test_presets_ship_inside_the_package():
    # Installed (non-editable) copies must find them too: they live in byol/configs, not the repo root.
    assert CONFIG_DIR.parent.name == "byol"
    assert {"fashion-mnist", "cifar10", "imagenet-paper", "tiny"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parses_and_validates(name):
    cfg = build_config(files=[find_preset(name)])  # validates, budget and views included
    budget = cfg.train.budget_seconds
    assert budget is None or budget > 0
    assert len(cfg.views.specs) == 2
    assert find_preset(name) == find_preset(f"{name}.yaml")


def test_paper_preset_is_the_papers_recipe():
    cfg = build_config(files=[find_preset("imagenet-paper")])
    assert cfg.model.backbone == "resnet50" and not cfg.model.small_stem
    assert (cfg.method.proj_hidden, cfg.method.proj_dim, cfg.method.pred_hidden) == (4096, 256, 4096)
    assert cfg.method.tau_base == 0.996
    o = cfg.optim
    assert (o.name, o.base_lr, o.weight_decay, o.batch_size, o.warmup_epochs, o.eta) == ("lars", 0.2, 1.5e-6, 4096, 10, 0.001)
    assert cfg.train.epochs == 1000


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="fashion-mnist"):
        find_preset("no-such-preset")


def test_amp_off_override_survives_yaml():
    # YAML 1.1 reads a bare `off` as false; `--set train.amp=off` must still mean "off".
    cfg = build_config(files=[find_preset("tiny")], overrides=["train.amp=off"])
    assert cfg.train.amp == "off"
    with pytest.raises(ConfigError):
        build_config(files=[find_preset("tiny")], overrides=["train.amp=true"])

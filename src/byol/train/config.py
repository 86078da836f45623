"""The whole-run config of pretraining: the torch-free sections of :mod:`byol.config` plus the method's own
section, whose dataclass the method registered with it (:mod:`byol.methods.registry`). It sits above the
methods because parsing ``method:`` needs the registry; code below that needs one section of a stored config
parses just that one (:func:`byol.config.parse_section`).

:func:`build_config` checks every value when a config is loaded (each section's fields' ranges and choices
as it is built, then :func:`validate_pretrain`: the batch, the budget and the views). A mistake therefore
fails before any data is read, with one ConfigError whose one-line message names the key.

The method section (:func:`parse_method`): ``method.name`` picks the dataclass. A key of another registered
method's section is dropped silently, so a BYOL preset runs with ``--method simclr``; so is every method
key (the heads aside) of a layer written for another method: a preset's BYOL ``tau_base`` is not MoCo's
``tau_base``. A key no method knows is an error with a did-you-mean. ``config.yaml`` holds the chosen
method's keys only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import byol.methods  # noqa: F401  (registers every method and its section)
from byol.config import (DataConfig, MethodConfig, ModelConfig, OptimConfig, TrainConfig, ViewsConfig, check_batch,
                         config_layers, fitting_batch, from_dict, merge, to_dict)
from byol.config.checks import Section, check_section, did_you_mean
from byol.errors import ByolError, ConfigError
from byol.methods.registry import DEFAULT_METHOD, config_class, section_keys
from byol.run.files import run_config_file


def _default_method() -> MethodConfig:
    return config_class(DEFAULT_METHOD)()


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=_default_method)  #: the chosen method's own section
    views: ViewsConfig = field(default_factory=ViewsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""  #: one line shown for the preset in ``byol --help`` / ``byol pretrain --help``


def _method_mappings(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for layer in layers:
        section = layer.get("method") or {}
        if not isinstance(section, dict):
            raise ConfigError(f"method: expected a mapping, got {section!r}")
        out.append(section)
    return out


def _name(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"method.name: expected a string, got {value!r}")
    return str(value)


def parse_method(layers: list[dict[str, Any]]) -> MethodConfig:
    """The ``method`` section of config ``layers`` (lowest first) as the chosen method's dataclass.

    The method is the last ``method.name`` set (default :data:`~byol.methods.registry.DEFAULT_METHOD`).
    A layer's keys count for the method named with them (in that layer or below): those of a layer written
    for another method are dropped, the heads (:class:`~byol.config.MethodConfig`'s fields) aside; keys of
    another method's section are dropped; older names are read by the section (``read_legacy``)."""
    sections = _method_mappings(layers)
    named, current = [], DEFAULT_METHOD
    for section in sections:
        current = _name(section.get("name", current))
        named.append(current)
    cls = config_class(current)
    own = [f.name for f in dataclasses.fields(cls)]
    shared = {f.name for f in dataclasses.fields(MethodConfig)}
    known = section_keys()
    values: dict[str, Any] = {}
    for section, name in zip(sections, named):
        bad = sorted((str(k) for k in section if k not in known))
        if bad:
            hint = did_you_mean(f"method.{bad[0]}", [f"method.{k}" for k in sorted(known)])
            raise ConfigError(f"unknown config key 'method.{bad[0]}'{hint}; "
                              f"valid keys here: {', '.join('method.' + k for k in own)}")
        if name == current:
            section = cls.read_legacy(section)
        values.update((k, v) for k, v in section.items() if k in own and (name == current or k in shared))
    return from_dict(cls, values, prefix="method.")


def config_from_layers(layers: list[dict[str, Any]]) -> PretrainConfig:
    """A checked PretrainConfig from config layers (:func:`byol.config.config_layers`), lowest first."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, {k: v for k, v in layer.items() if k != "method"})
    cfg = from_dict(PretrainConfig, merged)
    cfg.method = parse_method(layers)
    validate_pretrain(cfg)
    return cfg


def build_config(*, files: list[str | Path] | tuple = (), overrides: list[str] | tuple = (),
                 extra: dict[str, Any] | None = None) -> PretrainConfig:
    """Defaults <- YAML files (in order) <- ``extra`` (e.g. CLI flags) <- ``--set`` overrides, checked."""
    return config_from_layers(config_layers(files, overrides, extra))


def pretrain_config(data: dict[str, Any]) -> PretrainConfig:
    """A whole config dict (e.g. a checkpoint's stored one, or one written before keys moved) as PretrainConfig."""
    return build_config(extra=data)


def validate_pretrain(cfg: PretrainConfig) -> None:
    """The checks of a whole config: every section's values, the batch, the budget and the views.

    :func:`build_config` runs it on every config it loads; :func:`byol.train.pretrain.build_pretrain` runs it
    again for configs built or changed in code (a section checks itself when built, not when assigned to)."""
    check_batch(cfg.optim.batch_size, cfg.optim.accum_steps)
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if isinstance(section, Section):
            check_section(section, f.name)
    _ = cfg.train.budget_seconds, cfg.views.specs, cfg.views.small_spec  # parsed for their checks; read again where used
    check_small_crops_path(cfg.views.small_crops, streamed=cfg.data.stream == "on")


def check_small_crops_path(small_crops: int, *, streamed: bool) -> None:
    """The streamed data path decodes each image into the two views' crops only: no small views there."""
    if small_crops and streamed:
        raise ConfigError(f"views.small_crops={small_crops} needs the cached data path: the streamed one decodes "
                          "two crops per image (set data.stream=off, or views.small_crops=0)")


def fit_batch(cfg: PretrainConfig, num_images: int, world_size: int = 1) -> str | None:
    """On the default path (no ``--config``, no batch asked for) a data set smaller than the preset's batch
    trains with the largest batch that fits it: a multiple of ``optim.accum_steps`` x ``world_size``
    (:func:`byol.config.check_batch`) of at most ``num_images``. Sets ``cfg.optim.batch_size`` and returns
    the one-line note naming the new batch and the learning rate it implies (None: the batch fits, or no
    batch of two images per forward pass does, which check_batch then reports). A batch the user asked for
    is never changed."""
    from byol.optim.schedules import scaled_lr

    o = cfg.optim
    fit = fitting_batch(num_images, o.accum_steps * world_size)
    if num_images >= o.batch_size or not fit:
        return None
    asked, o.batch_size = o.batch_size, fit
    return (f"{num_images} training images, fewer than the preset's batch of {asked}: training with batch {fit} "
            f"(learning rate {o.base_lr:g} x {fit}/256 = {scaled_lr(o.base_lr, fit):.3g}); "
            "--batch-size sets another")


def load_run_config(run_dir: Path, overrides: list[str] | tuple = (),
                    extra: dict[str, Any] | None = None) -> PretrainConfig:
    """The resolved config of a run directory (with ``extra`` and ``--set`` ``overrides`` on top)."""
    return build_config(files=[run_config_file(run_dir)], overrides=overrides, extra=extra)


def stored_as_now(stored: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored config as this version writes it (e.g. a method's section written before it
    had its own keys only), so a resume compares like with like; unreadable: as stored."""
    try:
        return to_dict(pretrain_config(stored))
    except ByolError:
        return stored

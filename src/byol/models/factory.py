"""Backbones from a :class:`~byol.config.ModelConfig`: what pretraining, evaluation, benchmarks and
tests all use to build "the run's architecture"."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from byol.config import ModelConfig
from byol.models.backbones import build_backbone


def build_encoder(model: ModelConfig, in_channels: int) -> nn.Module:
    """A freshly initialised backbone of ``model`` for ``in_channels``-channel images."""
    return build_backbone(model.backbone, width=model.width, small_stem=model.small_stem, in_channels=in_channels,
                          **model.options)


def backbone_factory(model: ModelConfig, in_channels: int) -> Callable[[], nn.Module]:
    """A zero-argument factory of :func:`build_encoder` (what methods take, see byol.methods.registry)."""
    return lambda: build_encoder(model, in_channels)


def describe(model: ModelConfig, in_channels: int) -> dict:
    """The backbone as plain data (name, width, small_stem, in_channels, options): cards and sidecars."""
    return {"name": model.backbone, "width": model.width, "small_stem": model.small_stem,
            "in_channels": int(in_channels), "options": dict(model.options)}

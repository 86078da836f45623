"""Randomly initialised torchvision ResNets shaped like byol's: the targets of a torchvision export and
the random-init baselines of ``byol eval --torchvision NAME``."""

from __future__ import annotations

from torch import nn

from byol.errors import ConfigError

__all__ = ["TORCHVISION_RESNETS", "torchvision_resnet"]

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def torchvision_resnet(name: str, *, small_stem: bool = False, in_channels: int = 3) -> nn.Module:
    """A randomly initialised ``torchvision.models.<name>`` whose state_dict matches a ``byol`` ResNet
    at width 1: ``fc`` -> ``Identity``; with ``small_stem`` a 3x3 stride-1 ``conv1`` and no max-pool;
    ``conv1`` takes ``in_channels`` channels."""
    import torchvision

    if name not in TORCHVISION_RESNETS:
        raise ConfigError(f"no torchvision ResNet named {name!r} ({', '.join(TORCHVISION_RESNETS)})")
    model = getattr(torchvision.models, name)(weights=None)
    model.fc = nn.Identity()
    if small_stem or in_channels != 3:
        k, s, p = (3, 1, 1) if small_stem else (7, 2, 3)
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel_size=k, stride=s, padding=p, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if small_stem:
        model.maxpool = nn.Identity()
    return model

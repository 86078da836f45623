"""Backbone registry.

Every backbone maps float images ``[B, C, H, W]`` to pooled features ``[B, D]`` and exposes
``feature_dim``. ResNets are assembled from torchvision's own blocks with torchvision's attribute
names, so that at width 1 and with the standard stem a backbone's ``state_dict`` loads into
``torchvision.models.resnetXX()`` (minus ``fc``) with ``strict=True``.

Options:
- ``width``: multiplies every stage width (64, 128, 256, 512 at width 1), so CPU-sized ResNets exist.
- ``small_stem``: the usual CIFAR change, a 3x3 stride-1 first conv and no max-pool (for images
  <= 64 px). A departure from the paper's ImageNet ResNet-50, which uses a 7x7 stride-2 conv + pool.
- ``in_channels``: 1 (grayscale) or 3.

``convnet`` is a small VGG-style network (conv-BN-ReLU stages with max-pooling) sized for CPU
pretraining on 28-32 px images; it is not in the paper and exists because a ResNet-18 trains at
single-digit pairs/s on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from byol.errors import ConfigError


class ResNet(nn.Module):
    """torchvision-compatible ResNet trunk (no ``fc``) with width multiplier and optional small stem."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        width: float = 1.0,
        small_stem: bool = False,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        widths = [max(1, int(round(64 * width * m))) for m in (1, 2, 4, 8)]
        self.inplanes = widths[0]
        self.small_stem = small_stem
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = widths[3] * block.expansion
        # Same initialisation as torchvision's ResNet.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # the reference code zero-inits the last BN gamma; the paper used 1
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class ConvNet(nn.Module):
    """Small VGG-style CNN: per stage ``conv3x3-BN-ReLU`` then 2x2 max-pool (not after the last stage).

    ``widths`` are per-stage channel counts at width 1 (scaled by ``width``); ``convs`` the number
    of convs per stage. Output: global average pool of the last stage.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = (16, 32, 64, 128),
        convs: Sequence[int] | None = None,
        width: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        chans = [max(1, int(round(w * width))) for w in widths]
        convs = list(convs) if convs is not None else [1] * len(chans)
        if len(convs) != len(chans):
            raise ConfigError("convnet: 'convs' must have one entry per stage")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, (c, n) in enumerate(zip(chans, convs)):
            for _ in range(n):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
            if i < len(chans) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


_RESNETS: dict[str, tuple[type, tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _resnet_factory(name: str) -> Callable[..., nn.Module]:
    block, layers = _RESNETS[name]

    def make(*, width: float = 1.0, small_stem: bool = False, in_channels: int = 3, **kw) -> nn.Module:
        return ResNet(block, layers, width=width, small_stem=small_stem, in_channels=in_channels, **kw)

    return make


def _convnet(*, width: float = 1.0, small_stem: bool = False, in_channels: int = 3, **kw) -> nn.Module:
    return ConvNet(width=width, in_channels=in_channels, **kw)


BACKBONES: dict[str, Callable[..., nn.Module]] = {name: _resnet_factory(name) for name in _RESNETS}
BACKBONES["convnet"] = _convnet


def build_backbone(
    name: str, *, width: float = 1.0, small_stem: bool = False, in_channels: int = 3, **options
) -> nn.Module:
    """Build a registered backbone. The returned module has a ``feature_dim`` attribute."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    try:
        return BACKBONES[name](width=width, small_stem=small_stem, in_channels=in_channels, **options)
    except TypeError as exc:  # unknown option for this backbone
        raise ConfigError(f"backbone {name!r}: {exc}") from None

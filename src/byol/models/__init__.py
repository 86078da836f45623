"""Backbones (torchvision ResNets with small-image stem and width multiplier, a small CNN), heads, EMA."""

from byol.models.backbones import BACKBONES, ConvNet, ResNet, build_backbone
from byol.models.heads import MLP, ema_update
from byol.models.tv_resnets import TORCHVISION_RESNETS, torchvision_resnet

__all__ = [
    "BACKBONES", "ConvNet", "ResNet", "build_backbone", "MLP", "ema_update", "TORCHVISION_RESNETS", "torchvision_resnet",
]

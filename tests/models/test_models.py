"""Backbones: torchvision key compatibility, small stem, width; heads; EMA step vs formula."""

import pytest
import torch
import torchvision
from torch import nn

from byol.errors import ConfigError
from byol.models import MLP, build_backbone, ema_update


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_state_dict_loads_into_torchvision_strict(name):
    ours = build_backbone(name)
    tv = getattr(torchvision.models, name)()
    tv.fc = nn.Identity()
    tv.load_state_dict(ours.state_dict(), strict=True)
    tv.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(tv(x), ours(x))
    assert ours.feature_dim == (512 if name == "resnet18" else 2048)


def test_small_stem_width_and_channels():
    m = build_backbone("resnet18", width=0.25, small_stem=True, in_channels=1)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, nn.Identity)
    assert m.feature_dim == 128
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 128)


def test_convnet_shapes():
    m = build_backbone("convnet", in_channels=1, widths=[8, 16, 32])
    assert m.feature_dim == 32
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 32)


def test_bad_backbone_is_config_error():
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("resnet19")
    with pytest.raises(ConfigError):
        build_backbone("convnet", depth=3)


def test_mlp_head_layout():
    h = MLP(16, 32, 8)
    kinds = [type(m) for m in h]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert h[0].bias is not None and h[3].bias is None


def test_ema_update_every_parameter_matches_formula():
    torch.manual_seed(0)
    online, target = MLP(4, 8, 2), MLP(4, 8, 2)
    before = [p.clone() for p in target.parameters()]
    tau = 0.9
    ema_update(target, online, tau)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t, tau * b + (1 - tau) * o)
    # biases and BN affine parameters are included
    assert len(before) == 5

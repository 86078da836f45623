import numpy as np
import pytest
import torch
from torch import nn

from byol.augment import eval_transform
from byol.errors import DataError
from byol.eval import extract_features, linear_eval
from byol.eval.features import channels_last_weights

MEAN, STD = (0.3,), (0.2,)


def _cnn(c: int = 1, d: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, d),
        nn.BatchNorm1d(d),
    )


def _images(n: int = 64, c: int = 1, s: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8)


def _give_bn_stats(model: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode BN is not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def test_matches_manual_eval_forward_and_is_plain_float32_cpu():
    model, imgs = _cnn(), _images(50)
    _give_bn_stats(model)
    f = extract_features(model, imgs, size=12, mean=MEAN, std=STD, batch_size=16)
    assert f.shape == (50, 8) and f.dtype == torch.float32 and f.device.type == "cpu"
    assert not f.is_inference() and not f.requires_grad
    model.eval()
    with torch.no_grad():
        ref = model(eval_transform(imgs, 12, MEAN, STD))
    torch.testing.assert_close(f, ref, rtol=1e-5, atol=1e-5)
    # usable in an autograd graph (e.g. a probe trained with autograd)
    w = torch.zeros(8, 3, requires_grad=True)
    (f @ w).sum().backward()
    assert w.grad is not None


def test_bn_in_eval_mode_features_do_not_depend_on_the_batch():
    model, imgs = _cnn(), _images(64)
    _give_bn_stats(model)
    model.train()
    one = extract_features(model, imgs, size=12, mean=MEAN, std=STD, batch_size=1)
    full = extract_features(model, imgs, size=12, mean=MEAN, std=STD, batch_size=64)
    torch.testing.assert_close(one, full, rtol=1e-5, atol=1e-5)
    # The check has teeth: in training mode BN output for sample 0 depends on its batch.
    x = eval_transform(imgs, 12, MEAN, STD)
    with torch.no_grad():
        a = model(x)[0]
        b = model(x[:2])[0]
    assert not torch.allclose(a, b, atol=1e-3)


def test_restores_every_module_training_flag():
    model, imgs = _cnn(), _images(8)
    model.train()
    model[1].eval()  # mixed flags must survive, not be flattened by model.train(True)
    before = [m.training for m in model.modules()]
    extract_features(model, imgs, size=12, mean=MEAN, std=STD)
    assert [m.training for m in model.modules()] == before
    model.eval()
    extract_features(model, imgs, size=12, mean=MEAN, std=STD)
    assert not any(m.training for m in model.modules())


def test_restores_flags_on_error():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(1)

        def forward(self, x):
            raise RuntimeError("boom")

    m = Boom().train()
    with pytest.raises(RuntimeError):
        extract_features(m, _images(4), size=12, mean=MEAN, std=STD)
    assert m.training and m.bn.training


def test_channels_last_input_for_conv_models_only():
    seen = []

    class Probe(nn.Module):
        def __init__(self, conv: bool):
            super().__init__()
            self.body = nn.Conv2d(3, 2, 1) if conv else nn.Identity()

        def forward(self, x):
            seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
            return self.body(x).flatten(1)

    rgb = _images(4, c=3)  # with C = 1 both memory formats coincide
    extract_features(Probe(True), rgb, size=12, mean=MEAN, std=STD)
    extract_features(Probe(False), rgb, size=12, mean=MEAN, std=STD)
    assert seen == [True, False]


def test_weights_are_channels_last_during_the_call_and_restored_after():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            seen.append(self.conv.weight.is_contiguous(memory_format=torch.channels_last))
            y = self.bn(self.conv(x))
            seen.append(y.is_contiguous(memory_format=torch.channels_last))  # activations follow the weights
            return y.mean((2, 3))

    model = Probe()
    before = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    rgb = _images(8, c=3)
    f = extract_features(model, rgb, size=12, mean=MEAN, std=STD)
    assert seen == [True, True]
    for k, v in model.state_dict().items():  # the very same tensors, same values, NCHW again
        assert v.data_ptr() == before[k][0] and torch.equal(v, before[k][1]), k
    assert model.conv.weight.is_contiguous()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(f, model(eval_transform(rgb, 12, MEAN, STD)), rtol=1e-5, atol=1e-5)
    # a model that is already channels_last (the pretraining encoder) is left as it is
    model = model.to(memory_format=torch.channels_last)
    ptr = model.conv.weight.data_ptr()
    with channels_last_weights(model):
        assert model.conv.weight.data_ptr() == ptr
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_memmap_numpy_input_resize_and_flattening(tmp_path):
    imgs = _images(20, c=3, s=10)
    path = tmp_path / "x.npy"
    np.save(path, imgs.numpy())
    mm = np.load(path, mmap_mode="r")
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1))  # [B, 5, 1, 1]
    a = extract_features(model, mm, size=16, mean=(0.5, 0.4, 0.3), std=0.25, batch_size=7, progress=True)
    b = extract_features(model, torch.from_numpy(np.array(mm)), size=16, mean=(0.5, 0.4, 0.3), std=0.25)
    assert a.shape == (20, 5)
    torch.testing.assert_close(a, b)


def test_bad_inputs_raise_data_errors():
    model = _cnn()
    with pytest.raises(DataError):
        extract_features(model, _images(4).float(), size=12, mean=MEAN, std=STD)
    with pytest.raises(DataError):
        extract_features(model, _images(4), size=12, mean=(0.1, 0.2), std=STD)
    with pytest.raises(DataError):
        extract_features(model, _images(0), size=12, mean=MEAN, std=STD)


def test_collapsed_encoder_cannot_fool_the_protocol(labeled_images):
    """A constant encoder gives majority-class accuracy, a working one does better."""

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return self.p.expand(x.shape[0], 4)

    imgs, labels = labeled_images
    f = extract_features(Constant(), imgs, size=16, mean=MEAN, std=STD)
    res = linear_eval(f[::2], labels[::2], f[1::2], labels[1::2], l2_grid=[1e-4, 1e-2])
    share = torch.bincount(labels[1::2]).max().item() / labels[1::2].numel() * 100
    assert res["top1"] <= share + 1e-9

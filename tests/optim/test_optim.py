"""LARS against an independent NumPy implementation of the reference update; parameter groups."""

import numpy as np
import pytest
import torch
from torch import nn

from byol.errors import ConfigError
from byol.optim.optimizers import LARS, build_optimizer, param_groups


def _np_lars_step(w, g, m, lr, wd, eta, mom, exclude):
    u = g + (0.0 if exclude else wd) * w
    if not exclude:
        wn, un = np.linalg.norm(w), np.linalg.norm(u)
        trust = eta * wn / un if wn > 0 and un > 0 else 1.0
        u = trust * u
    m = mom * m + u
    return w - lr * m, m


def test_lars_matches_reference_update_over_steps():
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(5, 4)).astype(np.float64), rng.normal(size=5)
    W = nn.Parameter(torch.tensor(w0))
    B = nn.Parameter(torch.tensor(b0))
    groups = [
        {"params": [W], "weight_decay": 1e-2, "lars_exclude": False},
        {"params": [B], "weight_decay": 0.0, "lars_exclude": True},
    ]
    opt = LARS(groups, lr=0.5, momentum=0.9, eta=1e-3)
    w, b, mw, mb = w0.copy(), b0.copy(), np.zeros_like(w0), np.zeros_like(b0)
    for step in range(5):
        gw, gb = rng.normal(size=w0.shape), rng.normal(size=b0.shape)
        W.grad, B.grad = torch.tensor(gw), torch.tensor(gb)
        opt.step()
        w, mw = _np_lars_step(w, gw, mw, 0.5, 1e-2, 1e-3, 0.9, False)
        b, mb = _np_lars_step(b, gb, mb, 0.5, 0.0, 1e-3, 0.9, True)
        np.testing.assert_allclose(W.detach().numpy(), w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(B.detach().numpy(), b, rtol=1e-10, atol=1e-12)


def test_lars_zero_weight_uses_trust_one():
    W = nn.Parameter(torch.zeros(3, 3, dtype=torch.float64))
    opt = LARS([{"params": [W], "weight_decay": 0.0, "lars_exclude": False}], lr=1.0, momentum=0.0)
    W.grad = torch.ones(3, 3, dtype=torch.float64)
    opt.step()
    assert torch.allclose(W, -torch.ones(3, 3, dtype=torch.float64))


def test_param_groups_exclude_bias_and_bn():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups([net], 1e-6)
    assert {p.ndim for p in decay["params"]} == {4, 2}
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert len(no_decay["params"]) == 4  # BN weight, BN bias, Linear bias... and conv has bias too
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"] is True


def test_built_lars_excludes_biases_and_norm_params_from_decay_and_trust_ratio():
    """Through build_optimizer: a 1-D parameter gets plain momentum SGD (no decay, no trust ratio), a weight
    the trust-ratio-scaled update with decay. The decay is large so that any wrong grouping shows."""
    torch.manual_seed(0)
    net = nn.Linear(4, 3).double()  # weight [3, 4]: decayed and adapted; bias [3]: excluded
    lr, wd, mom, eta = 0.5, 0.1, 0.9, 1e-3
    opt = build_optimizer("lars", [net], lr=lr, weight_decay=wd, momentum=mom, eta=eta)
    rng = np.random.default_rng(1)
    w, b = net.weight.detach().numpy().copy(), net.bias.detach().numpy().copy()
    mw, mb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(3):
        gw, gb = rng.normal(size=w.shape), rng.normal(size=b.shape)
        net.weight.grad, net.bias.grad = torch.tensor(gw), torch.tensor(gb)
        opt.step()
        u = gw + wd * w  # included: decay, then the trust ratio, then momentum
        mw = mom * mw + eta * np.linalg.norm(w) / np.linalg.norm(u) * u
        w = w - lr * mw
        mb = mom * mb + gb  # excluded: plain momentum SGD
        b = b - lr * mb
        np.testing.assert_allclose(net.weight.detach().numpy(), w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net.bias.detach().numpy(), b, rtol=1e-10, atol=1e-12)


def test_build_optimizer_names():
    net = nn.Linear(3, 2)
    for name in ("lars", "sgd", "adamw"):
        opt = build_optimizer(name, [net], lr=0.1, weight_decay=1e-4)
        assert opt.param_groups[0]["weight_decay"] == 1e-4
        assert opt.param_groups[1]["weight_decay"] == 0.0
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer("adam2", [net], lr=0.1, weight_decay=0)


@pytest.mark.parametrize("name", ["lars", "sgd"])
def test_a_module_lr_multiplier_scales_its_step_and_nothing_else(name):
    """With plain SGD (no momentum history yet, no decay) a step is lr x gradient, so the predictor's weights
    must move exactly ``mult`` times as far as with mult 1 and every other weight the same; under LARS the
    trust ratio is per layer, so the same holds."""
    from byol.optim.optimizers import set_lr

    def run(mult):
        torch.manual_seed(0)
        enc, pred = nn.Linear(6, 5), nn.Linear(5, 5)
        opt = build_optimizer(name, [enc, pred], lr=0.1, weight_decay=0.0, lr_mult={pred: mult})
        set_lr(opt, 0.05)  # the schedule's value for this step
        before = [p.detach().clone() for p in (enc.weight, pred.weight, pred.bias)]
        pred(enc(torch.randn(4, 6))).pow(2).sum().backward()
        opt.step()
        return [(p.detach() - b) for p, b in zip((enc.weight, pred.weight, pred.bias), before)], opt

    (d_enc1, d_pred1, d_bias1), opt1 = run(1.0)
    (d_enc4, d_pred4, d_bias4), opt4 = run(4.0)
    torch.testing.assert_close(d_enc4, d_enc1)
    torch.testing.assert_close(d_pred4, 4 * d_pred1)
    torch.testing.assert_close(d_bias4, 4 * d_bias1)
    assert opt4.param_groups[0]["lr"] == 0.05 and len(opt1.param_groups) == 2 and len(opt4.param_groups) == 4
    assert sorted(g["lr"] for g in opt4.param_groups) == [0.05, 0.05, 0.2, 0.2]


def test_predictor_lr_mult_reaches_the_predictor_and_is_refused_without_one(tmp_path):
    from byol.config import find_preset
    from byol.train.config import build_config
    from byol.train.pretrain import _predictor_lr_mult
    from byol.methods import build_method
    from byol.models.factory import backbone_factory

    cfg = build_config(files=[find_preset("tiny")], overrides=["optim.predictor_lr_mult=10"])
    method = build_method(cfg.method, backbone_factory(cfg.model, 3))
    assert _predictor_lr_mult(cfg, method) == {method.predictor: 10.0}
    cfg = build_config(files=[find_preset("tiny")],
                       overrides=["optim.predictor_lr_mult=10", "method.use_predictor=false"])
    with pytest.raises(ConfigError, match="has no predictor"):
        _predictor_lr_mult(cfg, build_method(cfg.method, backbone_factory(cfg.model, 3)))
    with pytest.raises(ConfigError, match="predictor_lr_mult"):
        build_config(files=[find_preset("tiny")], overrides=["optim.predictor_lr_mult=0"])


def test_a_fixed_lr_module_keeps_the_peak_lr_while_the_others_follow_the_schedule():
    """SimSiam's predictor (Chen & He 2021, section 4.2): its groups hold peak lr x lr_mult at every step."""
    import torch
    from torch import nn

    from byol.optim.optimizers import build_optimizer, set_lr
    from byol.optim.schedules import warmup_cosine

    torch.manual_seed(0)
    body, head = nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    for name in ("lars", "sgd", "adamw"):
        opt = build_optimizer(name, [body, head], lr=0.4, weight_decay=1e-4, fixed_lr=[head], lr_mult={head: 0.5})
        fixed = [g for g in opt.param_groups if "fixed_lr" in g]
        assert {id(p) for g in fixed for p in g["params"]} == {id(p) for p in head.parameters()}
        assert all(g["fixed_lr"] == pytest.approx(0.2) for g in fixed)
        for step in (0, 3, 9):
            lr = warmup_cosine(step, 10, 0.4, 2)
            set_lr(opt, lr)
            assert opt.param_groups[0]["lr"] == lr  # the plain weights: scheduled
            assert all(g["lr"] == pytest.approx(0.2) for g in fixed)

"""BYOL method: loss wiring, stop-gradient, per-view BN, EMA after the optimizer step."""

import copy

import numpy as np
import pytest
import torch

from byol.config import MethodConfig
from byol.methods import BYOL
from byol.models import build_backbone
from byol.optim import build_optimizer
from byol.schedules import target_tau


def _method(target_init="copy", **kw):
    torch.manual_seed(0)
    mk = lambda: build_backbone("convnet", in_channels=1, widths=[4, 8])  # noqa: E731
    return BYOL(mk, MethodConfig(proj_hidden=16, proj_dim=8, pred_hidden=16, target_init=target_init, **kw))


def _np_l(p, z):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return ((p - z) ** 2).sum(1)


def test_loss_is_symmetric_normalized_mse_with_per_view_bn():
    m = _method()
    m.train()
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(6, 1, 12, 12, generator=g), torch.randn(6, 1, 12, 12, generator=g)
    ref = copy.deepcopy(m)
    out = m(v1, v2)
    with torch.no_grad():
        # each view its own forward pass (BN statistics per view), target in train mode
        p1 = ref.predictor(ref.projector(ref.encoder(v1)))
        p2 = ref.predictor(ref.projector(ref.encoder(v2)))
        z1 = ref.target_projector(ref.target_encoder(v1))
        z2 = ref.target_projector(ref.target_encoder(v2))
    expected = (_np_l(p1.numpy(), z2.numpy()) + _np_l(p2.numpy(), z1.numpy())).mean()
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    # concatenating the views into one BN batch would give a different value
    with torch.no_grad():
        both = ref.predictor(ref.projector(ref.encoder(torch.cat([v1, v2]))))
    assert not torch.allclose(both[:6], p1, atol=1e-4)


def test_no_gradient_reaches_target_and_target_is_not_optimized():
    m = _method()
    out = m(torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8))
    out["loss"].backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    assert all(p.grad is None for p in m.target_projector.parameters())
    assert any(p.grad is not None for p in m.predictor.parameters())
    opt_params = {id(p) for mod in m.trainable_modules() for p in mod.parameters()}
    assert not opt_params & {id(p) for p in m.target_encoder.parameters()}


@pytest.mark.parametrize("target_init", ["copy", "random"])
def test_one_training_step_then_ema_matches_formula(target_init):
    m = _method(target_init=target_init, tau_base=0.9)
    opt = build_optimizer("lars", m.trainable_modules(), lr=0.5, weight_decay=1e-6)
    target_before = [p.detach().clone() for p in list(m.target_encoder.parameters()) + list(m.target_projector.parameters())]
    out = m(torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8))
    out["loss"].backward()
    opt.step()
    online_after = [p.detach().clone() for p in list(m.encoder.parameters()) + list(m.projector.parameters())]
    K, k = 100, 3
    info = m.after_step(k, K)
    tau = target_tau(k, K, 0.9)
    assert info["tau"] == pytest.approx(tau)
    target_after = list(m.target_encoder.parameters()) + list(m.target_projector.parameters())
    assert len(target_after) == len(online_after)
    for b, o, t in zip(target_before, online_after, target_after):
        torch.testing.assert_close(t.detach(), tau * b + (1 - tau) * o)


def test_random_target_init_differs_copy_equals():
    rand, cp = _method("random"), _method("copy")
    assert not torch.equal(next(rand.target_encoder.parameters()), next(rand.encoder.parameters()))
    assert torch.equal(next(cp.target_encoder.parameters()), next(cp.encoder.parameters()))


def test_no_predictor_ablation_uses_identity():
    m = _method(use_predictor=False)
    assert isinstance(m.predictor, torch.nn.Identity)
    assert m(torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8))["loss"].item() >= 0

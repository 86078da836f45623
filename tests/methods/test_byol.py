"""BYOL method against independent references: the loss (NumPy), per-view BN, stop-gradient, the EMA with
the paper's tau schedule (hand-computed values), and the no-predictor ablation."""

import copy

import numpy as np
import pytest
import torch

from byol.methods import BYOLConfig
from byol.methods import BYOL
from byol.models import build_backbone


def _method(target_init="copy", **kw):
    torch.manual_seed(0)
    mk = lambda: build_backbone("convnet", in_channels=1, widths=[4, 8])  # noqa: E731
    return BYOL(mk, BYOLConfig(proj_hidden=16, proj_dim=8, pred_hidden=16, target_init=target_init, **kw))


def _np_l(p, z):
    """The paper's l(p, z) = || p/||p|| - z/||z|| ||^2 per row, in NumPy (independent of byol.losses)."""
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return ((p - z) ** 2).sum(1)


def _views(n=6):
    g = torch.Generator().manual_seed(1)
    # different distributions, so batch statistics over one view differ from those over both
    return torch.randn(n, 1, 12, 12, generator=g), 3 * torch.randn(n, 1, 12, 12, generator=g) + 2


@torch.no_grad()
def _reference_loss(m, v1, v2, *, per_view: bool) -> float:
    """The symmetric loss of (a copy of) ``m`` computed outside it: each view in its own forward pass
    (``per_view``, the paper's), or both views concatenated into one batch (one set of BN statistics)."""
    m = copy.deepcopy(m)

    def branches(x):
        online = m.projector(m.encoder(x))
        return m.predictor(online).numpy(), m.target_projector(m.target_encoder(x)).numpy()

    if per_view:
        (p1, z1), (p2, z2) = branches(v1), branches(v2)
    else:
        p, z = branches(torch.cat([v1, v2]))
        n = len(v1)
        p1, p2, z1, z2 = p[:n], p[n:], z[:n], z[n:]
    return float((_np_l(p1, z2) + _np_l(p2, z1)).mean())


def test_loss_is_the_papers_symmetric_normalized_mse_over_per_view_forward_passes():
    m = _method()
    m.train()
    v1, v2 = _views()
    per_view = _reference_loss(m, v1, v2, per_view=True)
    concatenated = _reference_loss(m, v1, v2, per_view=False)
    assert abs(per_view - concatenated) > 1e-2 * per_view  # the two designs are distinguishable here
    assert m(v1, v2)["loss"].item() == pytest.approx(per_view, rel=1e-5)


def test_no_gradient_reaches_target_and_target_is_not_optimized():
    m = _method()
    out = m(torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8))
    out["loss"].backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    assert all(p.grad is None for p in m.target_projector.parameters())
    assert any(p.grad is not None for p in m.predictor.parameters())
    opt_params = {id(p) for mod in m.trainable_modules() for p in mod.parameters()}
    assert not opt_params & {id(p) for p in m.target_encoder.parameters()}


# tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 with tau_base = 0.9, K = 100, worked out by hand:
# k = 0: cos 0 = 1 -> 0.9; k = 100: cos pi = -1 -> 1; k = 50: cos(pi/2) = 0 -> 0.95;
# k = 25: cos(pi/4) = 0.7071067812 -> 1 - 0.05 * 1.7071067812 = 0.9146446609.
@pytest.mark.parametrize("k, tau", [(0, 0.9), (25, 0.9146446609), (50, 0.95), (100, 1.0)])
def test_after_step_moves_the_target_by_the_papers_tau(k, tau):
    m = _method(target_init="random", tau_base=0.9)  # target != online, so every EMA weight matters
    online = list(m.encoder.parameters()) + list(m.projector.parameters())
    target = list(m.target_encoder.parameters()) + list(m.target_projector.parameters())
    before = [t.detach().clone() for t in target]
    info = m.after_step(k, 100)
    assert info["tau"] == pytest.approx(tau, abs=1e-9)
    assert len(target) == len(online)
    for b, o, t in zip(before, online, target):
        torch.testing.assert_close(t.detach(), tau * b + (1 - tau) * o.detach())


def test_random_target_init_differs_copy_equals():
    rand, cp = _method("random"), _method("copy")
    assert not torch.equal(next(rand.target_encoder.parameters()), next(rand.encoder.parameters()))
    assert torch.equal(next(cp.target_encoder.parameters()), next(cp.encoder.parameters()))


def test_no_predictor_ablation_regresses_projections_on_target_projections():
    m = _method(target_init="random", use_predictor=False)
    m.train()
    v1, v2 = _views()
    with torch.no_grad():
        ref = copy.deepcopy(m)
        z1, z2 = ref.projector(ref.encoder(v1)).numpy(), ref.projector(ref.encoder(v2)).numpy()
        t1 = ref.target_projector(ref.target_encoder(v1)).numpy()
        t2 = ref.target_projector(ref.target_encoder(v2)).numpy()
    expected = (_np_l(z1, t2) + _np_l(z2, t1)).mean()
    assert m(v1, v2)["loss"].item() == pytest.approx(expected, rel=1e-5)
    # and nothing besides the encoder and projector is trained
    trained = sum(p.numel() for mod in m.trainable_modules() for p in mod.parameters())
    assert trained == sum(p.numel() for p in [*m.encoder.parameters(), *m.projector.parameters()])

"""Loss, tau schedule, lr schedule against independent formulas (numpy / plain Python)."""

import math

import numpy as np
import pytest
import torch

from byol.losses import byol_loss, l2_normalize, normalized_mse
from byol.optim.schedules import scaled_lr, target_tau, warmup_cosine


def _np_loss(p, z):
    p = p / np.sqrt(np.maximum((p * p).sum(-1, keepdims=True), 1e-12))
    z = z / np.sqrt(np.maximum((z * z).sum(-1, keepdims=True), 1e-12))
    return ((p - z) ** 2).sum(-1)


def test_normalized_mse_is_two_minus_two_cos():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    cos = torch.nn.functional.cosine_similarity(p, z, dim=-1)
    torch.testing.assert_close(normalized_mse(p, z), 2 - 2 * cos, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(normalized_mse(p, z).numpy(), _np_loss(p.numpy(), z.numpy()), atol=1e-5)


def test_byol_loss_sums_directions_then_averages_batch():
    g = torch.Generator().manual_seed(1)
    p1, z2, p2, z1 = (torch.randn(16, 8, generator=g) for _ in range(4))
    ref = (_np_loss(p1.numpy(), z2.numpy()) + _np_loss(p2.numpy(), z1.numpy())).mean()
    assert byol_loss(p1, z2, p2, z1).item() == pytest.approx(ref, abs=1e-5)
    # identical directions -> 0; opposite -> 8 (the maximum: 4 per direction)
    assert byol_loss(p1, p1, p2, p2).item() == pytest.approx(0.0, abs=1e-5)
    assert byol_loss(p1, -p1, p2, -p2).item() == pytest.approx(8.0, abs=1e-4)


def test_loss_gradient_does_not_flow_into_scale():
    # normalized MSE is scale invariant: gradient is orthogonal to p
    p = torch.randn(4, 6, requires_grad=True)
    z = torch.randn(4, 6)
    normalized_mse(p, z).sum().backward()
    assert torch.allclose((p.grad * p).sum(-1), torch.zeros(4), atol=1e-5)


def test_l2_normalize_zero_vector_is_finite():
    assert torch.isfinite(l2_normalize(torch.zeros(2, 3))).all()


@pytest.mark.parametrize("base", [0.99, 0.996, 0.9])
def test_tau_schedule_matches_formula(base):
    K = 1000
    for k in [0, 1, 250, 500, 999, 1000]:
        ref = 1 - (1 - base) * (math.cos(math.pi * k / K) + 1) / 2
        assert target_tau(k, K, base) == pytest.approx(ref, abs=1e-12)
    assert target_tau(0, K, base) == pytest.approx(base)
    assert target_tau(K, K, base) == pytest.approx(1.0)
    assert target_tau(K // 2, K, base) == pytest.approx(1 - (1 - base) / 2)


def test_warmup_cosine():
    peak, K, W = 0.8, 1000, 100
    assert warmup_cosine(0, K, peak, W) == 0.0
    assert warmup_cosine(50, K, peak, W) == pytest.approx(0.4)
    assert warmup_cosine(W, K, peak, W) == pytest.approx(peak)
    mid = W + (K - W) // 2
    assert warmup_cosine(mid, K, peak, W) == pytest.approx(peak / 2, rel=1e-3)
    assert warmup_cosine(K, K, peak, W) == pytest.approx(0.0, abs=1e-12)
    vals = [warmup_cosine(k, K, peak, W) for k in range(W, K)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_scaled_lr():
    assert scaled_lr(0.2, 4096) == pytest.approx(3.2)
    assert scaled_lr(0.3, 256) == pytest.approx(0.3)


def test_warped_step_is_identity_without_a_change_and_continuous_with_one():
    from byol.optim.schedules import warped_step

    # no re-plan: position == step
    assert [warped_step(k, 100, 0, 0.0, 100) for k in (0, 37, 100)] == [0.0, 37.0, 100.0]
    # at step 40 of a 100-step schedule the run grows to 160 real steps: position 40 stays at step 40,
    # the schedule's end (100) is reached exactly at step 160, linearly in between
    assert warped_step(40, 160, 40, 40.0, 100) == 40.0
    assert warped_step(100, 160, 40, 40.0, 100) == pytest.approx(40 + 60 * 60 / 120)
    assert warped_step(160, 160, 40, 40.0, 100) == 100.0
    assert warped_step(500, 160, 40, 40.0, 100) == 100.0  # clamped past the end
    # lr and tau read at the warped position continue without a jump at the anchor
    lr_before = warmup_cosine(40, 100, 1.0, 10)
    lr_after = warmup_cosine(warped_step(41, 160, 40, 40.0, 100), 100, 1.0, 10)
    assert 0 < lr_before - lr_after < 0.02


def test_constant_tau_schedule_is_tau_base_throughout():
    K = 100
    for base in (0.0, 0.5, 1.0):
        assert [target_tau(k, K, base, "constant") for k in (0, 37, 100)] == [base] * 3
    assert target_tau(50, K, 0.0) == pytest.approx(0.5)  # the cosine, the default, still ramps
    with pytest.raises(ValueError, match="tau schedule"):
        target_tau(0, K, 0.9, "linear")

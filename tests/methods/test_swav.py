"""SwAV: Sinkhorn-Knopp and the swapped prediction loss against independent NumPy loops, the prototypes
(normalised, frozen), the queue (in the state dict), multi-crop, and what the equal partition does."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from byol.errors import ConfigError
from byol.methods import METHODS, build_method, config_class
from byol.methods.swav import SwAV, SwAVConfig, sinkhorn, swapped_loss
from byol.models import build_backbone


def _backbone():
    return build_backbone("convnet", in_channels=1, widths=[4, 8])


def _swav(seed=0, **kw):
    torch.manual_seed(seed)
    return build_method(SwAVConfig(**{"proj_hidden": 16, "proj_dim": 8, "prototypes": 5, **kw}), _backbone)


def _np_sinkhorn(scores, eps, iters):
    """The paper's K x B matrix, each row (prototype) to 1/K, each column (sample) to 1/B, by explicit loops."""
    q = np.exp(np.asarray(scores, dtype=np.float64).T / eps)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        for r in range(k):
            q[r, :] /= q[r, :].sum() * k
        for c in range(b):
            q[:, c] /= q[:, c].sum() * b
    return (q * b).T


def test_sinkhorn_matches_a_numpy_loop_and_its_marginals():
    s = F.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)), dim=1) @ \
        F.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), dim=1).T
    q = sinkhorn(s, 0.05, 3)
    np.testing.assert_allclose(q.numpy(), _np_sinkhorn(s.numpy(), 0.05, 3), rtol=1e-4, atol=1e-7)
    assert q.dtype == torch.float32 and not q.requires_grad
    torch.testing.assert_close(q.sum(dim=1), torch.ones(12))  # each sample: a distribution over prototypes
    # many iterations: every prototype gets B/K of the batch (the equal partition)
    torch.testing.assert_close(sinkhorn(s, 0.05, 200).sum(dim=0), torch.full((5,), 12 / 5), rtol=1e-3, atol=0)
    torch.testing.assert_close(sinkhorn(s, 0.05, 0), torch.softmax(s / 0.05, dim=1))  # the ablation


def test_swapped_loss_matches_a_numpy_reference():
    g = torch.Generator().manual_seed(3)
    scores = [torch.randn(6, 5, generator=g) for _ in range(4)]
    codes = [torch.softmax(torch.randn(6, 5, generator=g), dim=1) for _ in range(2)]
    loss = swapped_loss(scores, codes, 0.1)
    total = 0.0
    for i, q in enumerate(codes):
        sub = []
        for v, s in enumerate(scores):
            if v == i:
                continue
            x = s.double().numpy() / 0.1
            logp = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
            sub.append(-(q.double().numpy() * logp).sum(1).mean())
        total += np.mean(sub)
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)


def test_forward_is_the_swapped_loss_of_its_projections_and_normalised_prototypes():
    m = _swav()
    assert isinstance(m, SwAV) and METHODS["swav"] is SwAV and SwAV.multi_crop
    with torch.no_grad():
        m.prototypes.weight.mul_(3.0)  # the forward normalises them again first
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(1)
    v1, v2, s1 = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    out = m(v1, v2, s1)
    torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        w = F.normalize(ref.prototypes.weight, dim=1)
        z = F.normalize(ref.projector(ref.encoder(torch.cat([v1, v2]))), dim=1)  # the global views in one pass
        zs = F.normalize(ref.projector(ref.encoder(s1)), dim=1)
        scores = [z[:6] @ w.T, z[6:] @ w.T, zs @ w.T]
        codes = [torch.from_numpy(_np_sinkhorn(s.numpy(), 0.05, 3)).float() for s in scores[:2]]
    assert out["loss"].item() == pytest.approx(swapped_loss(scores, codes, 0.1).item(), rel=1e-4)
    torch.testing.assert_close(out["proj"], z[:6])
    out["loss"].backward()
    assert m.prototypes.weight.grad is not None and m.prototypes.weight.grad.abs().sum() > 0


def test_frozen_prototypes_get_no_gradient_and_no_update():
    m = _swav(freeze_prototypes_steps=2)
    opt = torch.optim.SGD([p for mod in m.trainable_modules() for p in mod.parameters()], lr=0.5, weight_decay=0.1)
    x = torch.randn(6, 1, 8, 8)
    before = m.prototypes.weight.detach().clone()
    for step in range(3):
        m(x, x.flip(-1))["loss"].backward()
        frozen = step < 2
        assert (m.prototypes.weight.grad is None) == frozen
        normalised = m.prototypes.weight.detach().clone()
        opt.step()  # weight decay included: no gradient, no update
        opt.zero_grad(set_to_none=True)
        m.after_step(step, 10)
        assert torch.equal(m.prototypes.weight, normalised) == frozen
    torch.testing.assert_close(normalised, before, rtol=0, atol=1e-6)  # frozen: only renormalised (rounding)


def test_queue_fills_from_its_start_step_is_used_when_full_and_round_trips_through_the_state_dict():
    m = _swav(queue_length=8, queue_start_step=1)
    x = [torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    m(x[0], x[0].flip(-1))
    assert int(m.queued) == 0 and m.queue.abs().sum() == 0  # before queue_start_step
    m.after_step(0, 10)
    out = m(x[1], x[1].flip(-1))
    torch.testing.assert_close(m.queue[0, :4], out["proj"])  # the newest projections at the front
    m(x[2], x[2].flip(-1))
    assert int(m.queued) == 8
    # full: the codes are computed over the queue's scores and the batch's (the batch's rows kept)
    state = copy.deepcopy(m.state_dict())
    assert {"queue", "queued", "steps"} <= state.keys()
    twin = _swav(seed=5, queue_length=8, queue_start_step=1)
    twin.load_state_dict(state)
    a, b = m(x[3], x[3].flip(-1))["loss"], twin(x[3], x[3].flip(-1))["loss"]
    assert a.item() == b.item() and torch.equal(m.queue, twin.queue)
    fresh = _swav(queue_length=8, queue_start_step=1)
    fresh.load_state_dict({**state, "queued": torch.tensor(0)})  # same weights, queue not yet full: other codes
    assert fresh(x[3], x[3].flip(-1))["loss"].item() != pytest.approx(b.item(), rel=1e-6)


def test_section_defaults_are_the_papers_and_ranges_are_checked():
    c = config_class("swav")()
    assert (c.proj_hidden, c.proj_dim, c.prototypes, c.temperature, c.epsilon, c.sinkhorn_iters) == \
        (2048, 128, 3000, 0.1, 0.05, 3)
    for bad in ({"prototypes": 0}, {"epsilon": 0}, {"temperature": -1}, {"queue_length": -1}):
        with pytest.raises(ConfigError, match=f"method.{next(iter(bad))}"):
            SwAVConfig(**bad)


def _assignments_spread(sinkhorn_iters, steps=30):
    """Train on a small generated set and return how many prototypes the batch's argmax codes use."""
    m = _swav(proj_dim=8, prototypes=16, sinkhorn_iters=sinkhorn_iters)
    g = torch.Generator().manual_seed(0)
    data = torch.rand(32, 1, 8, 8, generator=g)
    opt = torch.optim.SGD([p for mod in m.trainable_modules() for p in mod.parameters()], lr=0.1, momentum=0.9)
    for _ in range(steps):
        noise = [0.1 * torch.randn(data.shape, generator=g) for _ in range(2)]
        m(data + noise[0], data + noise[1])["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():  # BN on batch statistics, as in training
        scores = F.normalize(m.projector(m.encoder(data)), dim=1) @ F.normalize(m.prototypes.weight, dim=1).T
    return len(set(scores.argmax(dim=1).tolist()))


def test_the_equal_partition_spreads_the_assignments_and_plain_softmax_codes_concentrate_them():
    # measured: 16 and 1 of 16 prototypes, over 32 images
    assert _assignments_spread(3) >= 10
    assert _assignments_spread(0) <= 2  # every image drifts to the same prototype: collapse


def test_code_entropy_is_one_for_uniform_codes_and_identical_prototypes_stay_there():
    """``code_entropy`` against the entropy formula; prototypes that are all one vector score every image the
    same, so its codes are uniform (entropy 1), the loss is log K, and no gradient separates them again:
    the stuck state the training monitor reports as a code collapse."""
    from byol.methods.swav import code_entropy

    q = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    ref = -(q.double().numpy() * np.log(q.double().numpy())).sum(1) / np.log(5)
    np.testing.assert_allclose(code_entropy(q).numpy(), ref, rtol=1e-5)
    assert code_entropy(torch.eye(5)).tolist() == [0.0] * 5
    m = _swav()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    healthy = m(x, x.flip(-1))["code_entropy"]
    assert healthy.shape == (6,) and healthy.max() < 0.99
    with torch.no_grad():
        m.prototypes.weight.copy_(m.prototypes.weight[:1].expand(5, -1))
    out = m(x, x.flip(-1))
    torch.testing.assert_close(out["code_entropy"], torch.ones(6))
    assert out["loss"].item() == pytest.approx(np.log(5), rel=1e-5)
    out["loss"].backward()
    assert m.prototypes.weight.grad.abs().max() < 1e-6

"""MoCo v2: InfoNCE wiring, the queue (FIFO ring, enqueued after the loss, checkpointed), the key encoder's
momentum update after the optimizer step, and the single-process shuffling BN."""

import copy
from collections import deque

import numpy as np
import pytest
import torch

from byol.methods import MoCoConfig
from byol.errors import ConfigError
from byol.methods import METHODS, MoCo, build_method
from byol.models import build_backbone
from byol.optim.optimizers import build_optimizer


def _moco(seed=0, **kw):
    torch.manual_seed(seed)
    mk = lambda: build_backbone("convnet", in_channels=1, widths=[4, 8])  # noqa: E731
    cfg = {"name": "moco", "proj_hidden": 16, "proj_dim": 4, "queue_size": 10, "split_bn_groups": 1, **kw}
    return build_method(MoCoConfig(**cfg), mk)


def _views(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 1, 8, 8, generator=g)


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_info_nce(q, k, queue, t):
    """-mean_i log softmax([q_i.k_i, q_i.queue_1..K] / t)[0] in float64, from normalized q and k."""
    q, k, queue = _unit(q), _unit(k), np.asarray(queue, np.float64)
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / t
    m = logits.max(1, keepdims=True)
    log_softmax = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    return float(-log_softmax[:, 0].mean())


def test_moco_is_registered_with_the_papers_head_and_defaults():
    m = _moco()
    assert isinstance(m, MoCo) and METHODS["moco"] is MoCo
    assert m.temperature == 0.2  # MoCo v2's, when method.temperature is unset
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m.projector.modules())  # MoCo v2's MLP: no BN
    for key_net, net in ((m.key_encoder, m.encoder), (m.key_projector, m.projector)):
        assert all(torch.equal(a, b) for a, b in zip(key_net.parameters(), net.parameters()))  # starts as a copy
    assert m.queue.shape == (10, 4) and int(m.queue_ptr) == 0
    torch.testing.assert_close(m.queue.norm(dim=1), torch.ones(10))  # random unit keys until real ones arrive


def test_queue_is_a_fifo_ring_with_a_pointer():
    size = 5
    m = _moco(queue_size=size, proj_dim=2)
    initial = m.queue.clone()
    fifo: deque = deque(maxlen=size)  # the reference: the last `size` keys, oldest first
    count = 0
    key = lambda j: [float(j), -float(j) - 0.5]  # noqa: E731  (distinct rows)
    for n in (2, 2, 2, 1, 7, 3):
        batch = [key(count + i) for i in range(n)]
        m.enqueue(torch.tensor(batch))
        fifo.extend(batch)
        count += n
        ptr = int(m.queue_ptr)
        assert ptr == count % size
        if count < size:  # not full yet: slots 0..count-1 in order, the rest untouched
            assert m.queue[:count].tolist() == list(fifo)
            assert torch.equal(m.queue[count:], initial[count:])
        else:  # full: reading from the pointer (the oldest slot) around the ring gives oldest -> newest
            ring = torch.cat([m.queue[ptr:], m.queue[:ptr]])
            assert ring.tolist() == list(fifo)


def test_loss_reads_the_queue_from_before_the_batch_then_enqueues_its_keys():
    m = _moco(queue_size=10)
    ref = copy.deepcopy(m)
    old = m.queue.clone()
    v1, v2 = _views(n=6)
    out = m(v1, v2)
    with torch.no_grad():
        q = ref.projector(ref.encoder(v1))
        k = ref.key_projector(ref.key_encoder(v2))
    assert out["loss"].item() == pytest.approx(_np_info_nce(q, k, old, 0.2), rel=1e-5)
    torch.testing.assert_close(out["proj"], q)  # the online projection, for the collapse monitor
    np.testing.assert_allclose(m.queue[:6].numpy(), _unit(k), atol=1e-6)
    assert torch.equal(m.queue[6:], old[6:]) and int(m.queue_ptr) == 6
    # the second batch wraps around: slots 6..9 then 0, 1
    v3, v4 = _views(n=6, seed=2)
    m(v3, v4)
    with torch.no_grad():
        k2 = _unit(ref.key_projector(ref.key_encoder(v4)))
    np.testing.assert_allclose(m.queue[[6, 7, 8, 9, 0, 1]].numpy(), k2, atol=1e-6)
    np.testing.assert_allclose(m.queue[2:6].numpy(), _unit(k)[2:], atol=1e-6)
    assert int(m.queue_ptr) == 2


def test_eval_mode_forward_leaves_the_queue_alone():
    m = _moco()
    m.eval()
    before = m.queue.clone()
    m(*_views())
    assert torch.equal(m.queue, before) and int(m.queue_ptr) == 0


def test_key_networks_are_never_trained_and_follow_by_momentum_after_the_optimizer_step():
    mom = 0.9
    m = _moco(tau_base=mom)
    opt = build_optimizer("lars", m.trainable_modules(), lr=0.5, weight_decay=1e-6)
    key_params = list(m.key_encoder.parameters()) + list(m.key_projector.parameters())
    optimized = {id(p) for group in opt.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in key_params}
    assert all(not p.requires_grad for p in key_params)
    key_before = [p.detach().clone() for p in key_params]
    m(*_views())["loss"].backward()
    assert all(p.grad is None for p in key_params)
    opt.step()
    online_after = [p.detach().clone() for p in list(m.encoder.parameters()) + list(m.projector.parameters())]
    assert m.after_step(3, 100) == {"tau": mom}  # constant by default: MoCo's m
    for b, o, k in zip(key_before, online_after, key_params):
        torch.testing.assert_close(k.detach(), mom * b + (1 - mom) * o)
    # the online network is not touched by the update
    for o, p in zip(online_after, list(m.encoder.parameters()) + list(m.projector.parameters())):
        assert torch.equal(o, p.detach())


def test_shuffled_bn_normalizes_each_key_in_a_random_group_and_each_query_in_its_consecutive_group():
    groups, n = 3, 12
    m = _moco(split_bn_groups=groups, queue_size=16)
    ref = copy.deepcopy(m)
    seen = {"q": [], "k": []}
    m.encoder.register_forward_pre_hook(lambda mod, args: seen["q"].append(args[0].detach().clone()))
    m.key_encoder.register_forward_pre_hook(lambda mod, args: seen["k"].append(args[0].detach().clone()))
    v1, v2 = _views(n=n)
    old = m.queue.clone()
    out = m(v1, v2)
    size = n // groups
    # queries: consecutive groups, each its own forward pass (own BN statistics)
    assert len(seen["q"]) == groups
    assert all(torch.equal(x, v1[g * size:(g + 1) * size]) for g, x in enumerate(seen["q"]))
    # keys: groups of a shuffled batch; find which image each group row is
    assert len(seen["k"]) == groups and all(len(x) == size for x in seen["k"])
    flat = v2.flatten(1)
    members = [[int((flat == row).all(1).nonzero()) for row in x.flatten(1)] for x in seen["k"]]
    assert sorted(sum(members, [])) == list(range(n))  # a permutation of the batch
    assert any(sorted(mem) != list(range(g * size, (g + 1) * size)) for g, mem in enumerate(members))
    # reference keys: each image's key computed within its group, in the batch's order
    k_ref = torch.empty(n, 4)
    q_ref = torch.empty(n, 4)
    with torch.no_grad():
        for x, mem in zip(seen["k"], members):
            k_ref[mem] = ref.key_projector(ref.key_encoder(x))
        for g, x in enumerate(seen["q"]):
            q_ref[g * size:(g + 1) * size] = ref.projector(ref.encoder(x))
    torch.testing.assert_close(out["proj"], q_ref)
    np.testing.assert_allclose(m.queue[:n].numpy(), _unit(k_ref), atol=1e-6)
    assert out["loss"].item() == pytest.approx(_np_info_nce(q_ref, k_ref, old, 0.2), rel=1e-5)
    # one BN batch gives other keys: the groups matter
    with torch.no_grad():
        k_one_batch = ref.key_projector(ref.key_encoder(v2))
    assert not np.allclose(_unit(k_one_batch), _unit(k_ref), atol=1e-4)


def test_queue_and_pointer_are_checkpointed_and_resume_exactly():
    m = _moco(split_bn_groups=2)
    for seed in range(3):
        m(*_views(seed=seed))
    state = m.state_dict()
    assert {"queue", "queue_ptr"} <= set(state)
    other = _moco(seed=5, split_bn_groups=2)
    other.load_state_dict(state)
    assert torch.equal(other.queue, m.queue) and int(other.queue_ptr) == int(m.queue_ptr) == 18 % 10
    torch.manual_seed(9)
    a = m(*_views(seed=7))["loss"]
    torch.manual_seed(9)
    b = other(*_views(seed=7))["loss"]
    assert torch.equal(a, b) and torch.equal(m.queue, other.queue)


@pytest.mark.parametrize("key, value", [("queue_size", 0), ("tau_base", 1.5), ("split_bn_groups", 0),
                                        ("temperature", -0.1)])
def test_bad_values_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"method.{key}"):
        _moco(**{key: value})


def test_split_bn_groups_are_global_and_must_be_a_multiple_of_the_processes(monkeypatch):
    """``split_bn_groups`` counts the groups over all processes: 8 on 4 processes is 2 per process; 8 on 3
    processes is refused with a one-line error naming a size that works."""
    from byol.runtime import dist

    monkeypatch.setattr(dist, "world_size", lambda: 4)
    assert _moco(split_bn_groups=8).local_groups == 2
    monkeypatch.setattr(dist, "world_size", lambda: 3)
    with pytest.raises(ConfigError, match=r"split_bn_groups=8 .* multiple of the 3 processes.*split_bn_groups=9"):
        _moco(split_bn_groups=8)

"""BYOL with multi-crop views (a departure from the paper, which has none): targets from the two global views
only, each small view's prediction regressed onto both, against a NumPy reference; without small views the
loss is BYOL's, bit for bit."""

import copy

import numpy as np
import pytest
import torch

from byol.errors import ConfigError
from byol.methods import BYOL, BYOLConfig
from byol.models import build_backbone


def _method(**kw):
    torch.manual_seed(0)
    cfg = BYOLConfig(**{"proj_hidden": 16, "proj_dim": 8, "pred_hidden": 16, **kw})
    return BYOL(lambda: build_backbone("convnet", in_channels=1, widths=[4, 8]), cfg)


def _np_l(p, z):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return ((p - z) ** 2).sum(axis=1).mean()


def test_small_views_predict_both_global_targets_and_never_make_targets():
    m = _method()
    assert BYOL.multi_crop
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(6, 1, 12, 12, generator=g), torch.randn(6, 1, 12, 12, generator=g)
    small = [torch.randn(6, 1, 6, 6, generator=g) for _ in range(3)]
    loss = m(v1, v2, *small)["loss"]
    with torch.no_grad():  # each view through its own pass, as the method does
        pred = [ref.predictor(ref.projector(ref.encoder(v))).double().numpy() for v in (v1, v2, *small)]
        t1, t2 = (ref.target_projector(ref.target_encoder(v)).double().numpy() for v in (v1, v2))
    pairs = [(pred[0], t2), (pred[1], t1)] + [(p, t) for p in pred[2:] for t in (t1, t2)]
    expected = 2 * np.mean([_np_l(p, t) for p, t in pairs])  # the mean over 8 pairs, on BYOL's [0, 8] scale
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())


def test_without_small_views_the_loss_is_byols_and_the_pair_mean_matches_it():
    m = _method()
    g = torch.Generator().manual_seed(2)
    v1, v2 = torch.randn(6, 1, 12, 12, generator=g), torch.randn(6, 1, 12, 12, generator=g)
    plain = m(v1, v2)["loss"]
    p1, p2 = (m.predictor(m.projector(m.encoder(v))) for v in (v1, v2))
    t1, t2 = m._targets(v1, v2, None, None)
    assert m._multi_crop_loss(p1, p2, t1, t2, ()).item() == pytest.approx(plain.item(), rel=1e-6)


def test_the_infonce_variant_takes_no_small_views():
    m = _method(negative_weight=0.5)
    x = torch.randn(4, 1, 12, 12)
    with pytest.raises(ConfigError, match="views.small_crops=0"):
        m(x, x, x[:, :, :6, :6])

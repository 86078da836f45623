"""BYOL's ablations (Grill et al. 2020, Table 5 and App. I / Table 19): a fixed tau, the target as the online
network (with and without stop-gradient), the weighted negative term, and views with ops removed."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from byol.augment import TwoViewAugment, view_specs
from byol.config import find_preset
from byol.methods import BYOLConfig
from byol.train.config import build_config
from byol.errors import ConfigError
from byol.losses import nt_xent
from byol.methods import BYOL
from byol.models import build_backbone
from byol.optim.optimizers import build_optimizer


def _method(**kw):
    torch.manual_seed(0)
    mk = lambda: build_backbone("convnet", in_channels=1, widths=[4, 8])  # noqa: E731
    return BYOL(mk, BYOLConfig(**{"proj_hidden": 16, "proj_dim": 8, "pred_hidden": 16, "target_init": "copy", **kw}))


def _views(seed=1, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 1, 8, 8, generator=g)


def _target_params(m):
    return [p.detach().clone() for p in list(m.target_encoder.parameters()) + list(m.target_projector.parameters())]


def _online_params(m):
    return [p.detach().clone() for p in list(m.encoder.parameters()) + list(m.projector.parameters())]


def _train_step(m, opt, k, total):
    out = m(*_views(seed=k))
    out["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return m.after_step(k, total)


# --- a fixed tau (Table 5a) -----------------------------------------------------------------------------------


def test_constant_tau_one_with_a_random_target_never_moves_it():
    m = _method(target_init="random", tau_base=1.0, tau_schedule="constant")
    opt = build_optimizer("lars", m.trainable_modules(), lr=0.5, weight_decay=1e-6)
    target0, online0 = _target_params(m), _online_params(m)
    assert not torch.equal(target0[0], online0[0])  # its own random initialisation
    infos = [_train_step(m, opt, k, 10) for k in range(4)]
    assert [i["tau"] for i in infos] == [1.0] * 4
    assert all(torch.equal(a, b) for a, b in zip(target0, _target_params(m)))  # bit for bit
    assert not all(torch.equal(a, b) for a, b in zip(online0, _online_params(m)))  # while the online net trained


def test_constant_tau_zero_makes_the_target_the_online_weights_of_the_last_step():
    m = _method(target_init="random", tau_base=0.0, tau_schedule="constant")
    opt = build_optimizer("lars", m.trainable_modules(), lr=0.5, weight_decay=1e-6)
    info = _train_step(m, opt, 50, 100)  # mid-run: the cosine from tau_base = 0 would give tau = 0.5 here
    assert info["tau"] == 0.0
    assert all(torch.equal(t, o) for t, o in zip(_target_params(m), _online_params(m)))


def test_cosine_schedule_from_tau_base_zero_still_ramps():
    m = _method(tau_base=0.0)
    assert m.after_step(50, 100)["tau"] == pytest.approx(0.5)


# --- the target as the online network (Table 5b, Table 19) ----------------------------------------------------


def _reference_loss(m, v1, v2, stop_gradient):
    """Sum over both directions of mean(2 - 2 cos(prediction, target projection)), the target projections
    being the online projections of the same forward pass (detached for sg(theta))."""
    z1, z2 = m.projector(m.encoder(v1)), m.projector(m.encoder(v2))
    p1, p2 = m.predictor(z1), m.predictor(z2)
    t1, t2 = (z1.detach(), z2.detach()) if stop_gradient else (z1, z2)
    return (2 - 2 * F.cosine_similarity(p1, t2)).mean() + (2 - 2 * F.cosine_similarity(p2, t1)).mean()


def _grads(m):
    return [p.grad.clone() for p in m.encoder.parameters()]


@pytest.mark.parametrize("target", ["online-sg", "online"])
def test_online_targets_use_the_online_projections_with_and_without_stop_gradient(target):
    m = _method(target=target)
    assert not hasattr(m, "target_encoder") and not any(k.startswith("target_") for k in m.state_dict())
    ref = copy.deepcopy(m)
    v1, v2 = _views()
    out = m(v1, v2)
    out["loss"].backward()
    expected = _reference_loss(ref, v1, v2, stop_gradient=target == "online-sg")
    expected.backward()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    for a, b in zip(_grads(m), _grads(ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert m.after_step(3, 10) == {}  # nothing to update


def test_stop_gradient_changes_the_gradient():
    # the two modes above must differ, or the previous test could not tell them apart
    grads = {}
    for target in ("online-sg", "online"):
        m = _method(target=target)
        m(*_views())["loss"].backward()
        grads[target] = _grads(m)
    assert any(not torch.allclose(a, b, rtol=1e-3) for a, b in zip(grads["online-sg"], grads["online"]))


# --- the weighted negative term (App. I, Table 19) -------------------------------------------------------------


def _np_infonce_ab(p, t_same, t_other, alpha, beta):
    """App. I's InfoNCE_{alpha,beta} in float64 NumPy (the S matrices written out, then log-sum-exp per row)."""
    p, t_same, t_other = (np.asarray(x, np.float64) for x in (p, t_same, t_other))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    s_same = unit(p) @ unit(t_same).T  # s_same[i, j] = S(v_i, v_j)
    s_other = unit(p) @ unit(t_other).T  # s_other[i, j] = S(v_i, v'_j)
    b = len(p)
    off_diagonal = ~np.eye(b, dtype=bool)
    partition = (np.exp(s_same / alpha) * off_diagonal).sum(1) + np.exp(s_other / alpha).sum(1)
    return 2.0 / b * np.trace(s_other) - beta * 2.0 * alpha / b * np.log(partition).sum()


@pytest.mark.parametrize("use_predictor", [True, False])
def test_negative_term_in_the_method_matches_an_independent_numpy_formula(use_predictor):
    alpha, beta = 0.3, 0.5
    m = _method(negative_weight=beta, temperature=alpha, use_predictor=use_predictor)
    ref = copy.deepcopy(m)
    v1, v2 = _views()
    out = m(v1, v2)
    with torch.no_grad():
        p1 = ref.predictor(ref.projector(ref.encoder(v1))).numpy()
        p2 = ref.predictor(ref.projector(ref.encoder(v2))).numpy()
        t1 = ref.target_projector(ref.target_encoder(v1)).numpy()
        t2 = ref.target_projector(ref.target_encoder(v2)).numpy()
    expected = (2 - _np_infonce_ab(p1, t1, t2, alpha, beta)) + (2 - _np_infonce_ab(p2, t2, t1, alpha, beta))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_no_predictor_online_target_beta_one_is_simclr():
    # Table 5b's SimCLR row inside BYOL: the loss is 4 + 4 alpha * NT-Xent of the online projections
    alpha = 0.2
    m = _method(use_predictor=False, target="online", negative_weight=1.0, temperature=alpha)
    ref = copy.deepcopy(m)
    v1, v2 = _views()
    with torch.no_grad():
        z1, z2 = ref.projector(ref.encoder(v1)), ref.projector(ref.encoder(v2))
    assert m(v1, v2)["loss"].item() == pytest.approx(4 + 4 * alpha * nt_xent(z1, z2, alpha).item(), rel=1e-5)


@pytest.mark.parametrize("key, value", [("target", "frozen"), ("tau_schedule", "linear"), ("negative_weight", -1.0),
                                        ("temperature", 0.0)])
def test_bad_ablation_values_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"method.{key}"):
        _method(**{key: value})


# --- views with ops removed (Table 5's transformation rows) ---------------------------------------------------

_NO_COLOUR = {"jitter_p": 0, "gray_p": 0, "blur_p": 0, "solarize_p": 0}


def _augment(both):
    cfg = build_config(files=[find_preset("tiny")],
                       overrides=[f"views.both.{k}={v}" for k, v in both.items()])
    return TwoViewAugment(*view_specs(cfg.views.view1, cfg.views.view2, cfg.views.both), 16, [0.5] * 3, [0.25] * 3)


def _crop_flip_only(images, both):
    """Whether every view of ``images`` is the normalized image or its mirror (with crops of the whole image)."""
    v1, v2 = _augment({**both, "crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0]})(
        images, torch.Generator().manual_seed(0))
    x = (images.float() / 255 - 0.5) / 0.25
    same = lambda a, b: (a - b).abs().amax(dim=(1, 2, 3)) < 1e-4  # noqa: E731
    flips = [same(v, x.flip(-1)) for v in (v1, v2)]
    ok = all(bool((same(v, x) | f).all()) for v, f in zip((v1, v2), flips))
    return ok, torch.cat(flips)


def test_views_without_colour_blur_and_solarize_are_crop_and_flip_only():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g)
    ok, flips = _crop_flip_only(images, _NO_COLOUR)
    assert ok
    assert 0 < int(flips.sum()) < len(flips)  # flips still happen, not always
    # with the paper's random crops, a single-colour image stays exactly its colour
    colours = torch.randint(0, 256, (8, 3, 1, 1), dtype=torch.uint8, generator=g).expand(8, 3, 16, 16).contiguous()
    for v in _augment(_NO_COLOUR)(colours, torch.Generator().manual_seed(1)):
        torch.testing.assert_close(v, ((colours.float() / 255 - 0.5) / 0.25), atol=1e-4, rtol=0)


@pytest.mark.parametrize("op", sorted(_NO_COLOUR))
def test_the_crop_and_flip_check_fails_when_any_op_still_runs(op):
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ok, _ = _crop_flip_only(images, {**_NO_COLOUR, op: 1})
    assert not ok

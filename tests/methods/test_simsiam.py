"""SimSiam (Chen & He 2021): the symmetrized negative cosine against an independent NumPy formula, the heads'
shapes, stop-gradient checked with autograd, the section's defaults and ranges, and the paper's collapse
without stop-gradient (section 4.1, Figure 2) on a small generated set."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from byol.augment import TwoViewAugment, paper_views
from byol.config import find_preset, to_dict
from byol.errors import ConfigError
from byol.methods import METHODS, build_method, config_class
from byol.methods.simsiam import SimSiam, SimSiamConfig
from byol.models import build_backbone
from byol.optim.optimizers import build_optimizer
from byol.train.config import build_config
from byol.train.monitor import collapse_stats, is_collapsed


def _simsiam(**kw):
    torch.manual_seed(0)
    mk = lambda: build_backbone("convnet", in_channels=1, widths=[4, 8])  # noqa: E731
    return build_method(SimSiamConfig(**{"proj_hidden": 16, "proj_dim": 12, "pred_hidden": 6, **kw}), mk)


def _views(seed=1, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 1, 8, 8, generator=g)


def _np_loss(p1, z2, p2, z1):
    """``-cos(p1, z2) / 2 - cos(p2, z1) / 2``, averaged over the batch, in float64."""
    def d(p, z):
        p, z = p.astype(np.float64), z.astype(np.float64)
        return -np.mean(np.sum(p * z, axis=1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(z, axis=1)))
    return 0.5 * d(p1, z2) + 0.5 * d(p2, z1)


def test_section_defaults_are_the_papers_imagenet_heads_and_ranges_are_checked():
    assert config_class("simsiam") is SimSiamConfig and METHODS["simsiam"] is SimSiam
    assert to_dict(SimSiamConfig()) == {"name": "simsiam", "proj_hidden": 2048, "proj_dim": 2048, "proj_layers": 3,
                                        "pred_hidden": 512, "stop_gradient": True, "fixed_predictor_lr": True}
    for key, value, message in [("proj_layers", 0, "method.proj_layers must be >= 1, got 0"),
                                ("pred_hidden", 0, "method.pred_hidden must be positive, got 0"),
                                ("proj_dim", -1, "method.proj_dim must be positive, got -1")]:
        with pytest.raises(ConfigError) as e:
            SimSiamConfig(**{key: value})
        assert str(e.value) == message
        with pytest.raises(ConfigError) as e:
            build_config(files=[find_preset("tiny")], overrides=[f"method.{key}={value}"],
                         extra={"method": {"name": "simsiam"}})
        assert str(e.value) == message


def test_preset_reads_as_simsiam_with_the_papers_cifar10_optimizer():
    cfg = build_config(files=[find_preset("simsiam-cifar10")])
    assert isinstance(cfg.method, SimSiamConfig) and cfg.method.proj_layers == 2
    o = cfg.optim
    assert (o.name, o.base_lr, o.weight_decay, o.momentum, o.warmup_epochs) == ("sgd", 0.03, 5e-4, 0.9, 0.0)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_heads_have_the_papers_shape(layers):
    """Projector: BN after every Linear, the output's without affine parameters, ReLU after all but the last;
    predictor: the bottleneck d -> pred_hidden -> d, BN + ReLU on the hidden layer only."""
    m = _simsiam(proj_layers=layers)
    kinds = [type(x) for x in m.projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * (layers - 1) + [nn.Linear, nn.BatchNorm1d]
    assert [x.out_features for x in m.projector if isinstance(x, nn.Linear)] == [16] * (layers - 1) + [12]
    assert not m.projector[-1].affine and all(x.affine for x in m.projector[:-1] if isinstance(x, nn.BatchNorm1d))
    assert [type(x) for x in m.predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (m.predictor[0].in_features, m.predictor[0].out_features, m.predictor[3].out_features) == (12, 6, 12)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_loss_is_the_symmetrized_negative_cosine_with_one_forward_pass_per_view(stop_gradient):
    m = _simsiam(stop_gradient=stop_gradient)
    ref = copy.deepcopy(m)
    v1, v2 = _views()
    out = m(v1, v2)
    with torch.no_grad():
        z1, z2 = ref.projector(ref.encoder(v1)), ref.projector(ref.encoder(v2))  # BN statistics per view
        p1, p2 = ref.predictor(z1), ref.predictor(z2)
    expected = _np_loss(p1.numpy(), z2.numpy(), p2.numpy(), z1.numpy())
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5) and -1 <= expected <= 1
    torch.testing.assert_close(out["proj"], z1)  # the projection, for the collapse monitor
    assert not out["proj"].requires_grad


def _projections(m, v1, v2):
    """The method's loss and the two projections z1, z2 of its own forward pass (caught by a forward hook)."""
    seen = []
    hook = m.projector.register_forward_hook(lambda _mod, _inp, out: seen.append(out))
    loss = m(v1, v2)["loss"]
    hook.remove()
    return loss, seen


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_with_stop_gradient_no_gradient_flows_through_the_target_side(stop_gradient):
    """Autograd: with sg, d loss / d z1 is exactly the gradient through the predictor, 1/2 d D(h(z1), z2) / d z1
    (z1 enters the loss only as h's input); without sg the target side of D(p2, z1) adds its own."""
    m = _simsiam(stop_gradient=stop_gradient)
    loss, (z1, z2) = _projections(m, *_views())
    got = torch.autograd.grad(loss, z1)[0]
    z1_in = z1.detach().requires_grad_()
    predictor_side = torch.autograd.grad(-0.5 * F.cosine_similarity(m.predictor(z1_in), z2.detach()).mean(), z1_in)[0]
    assert got.abs().sum() > 0
    if stop_gradient:
        torch.testing.assert_close(got, predictor_side, rtol=1e-5, atol=1e-8)
    else:
        assert not torch.allclose(got, predictor_side, rtol=1e-3, atol=1e-6)


def test_no_momentum_twin_everything_trains_and_after_step_is_empty():
    m = _simsiam()
    trained = {id(p) for mod in m.trainable_modules() for p in mod.parameters()}
    assert trained == {id(p) for p in m.parameters()}
    assert m.after_step(0, 10) == {}


def _train(stop_gradient: bool, seed: int, steps: int = 120):
    """``steps`` SGD steps of a small SimSiam on 128 generated 16 px images; the collapse statistics of the
    projection z and the prediction p of 64 fresh views."""
    torch.set_num_threads(1)  # 1.5 s per run here; more threads only add synchronisation on 32-image batches
    g = torch.Generator().manual_seed(0)
    cells = torch.rand(128, 3, 4, 4, generator=g)
    images = (F.interpolate(cells, size=16, mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)
    augment = TwoViewAugment(*paper_views(), 16, [0.5] * 3, [0.25] * 3)
    torch.manual_seed(seed)
    m = build_method(SimSiamConfig(proj_hidden=64, proj_dim=64, pred_hidden=16, stop_gradient=stop_gradient),
                     lambda: build_backbone("convnet", in_channels=3, widths=[8, 16]))
    opt = build_optimizer("sgd", m.trainable_modules(), lr=0.1, weight_decay=5e-4, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        v1, _v2 = augment(images[torch.randperm(128, generator=gen)[:32]], gen)
        m(v1, _v2)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        v1, _v2 = augment(images[:64], gen)
        z = m.projector(m.encoder(v1))
        return collapse_stats(z), collapse_stats(m.predictor(z))


def test_without_stop_gradient_simsiam_collapses_with_it_it_does_not():
    """Section 4.1 / Figure 2 at toy scale, same seed and steps. Measured over seeds 0-4 at 120 steps: the
    prediction p's per-dimension std of l2-normalized outputs is 0.003-0.008 without stop-gradient (collapse:
    < 0.1 / sqrt(d)) and 0.066-0.094 with it (0.53-0.75 / sqrt(d)); the projection z, batch-normalized at its
    output, keeps its std until the pre-BN variance falls under BN's epsilon (0.055-0.073 without, 0.119-0.124
    with; one seed reached 0 by 300 steps)."""
    (z_sg, p_sg), (z_free, p_free) = _train(True, seed=0), _train(False, seed=0)
    assert is_collapsed(p_free) and p_free["z_std"] < 0.1 * p_sg["z_std"]
    assert not is_collapsed(p_sg) and p_sg["z_std"] > 0.4 * p_sg["z_std_ref"]
    assert z_sg["z_std"] > 0.9 * z_sg["z_std_ref"] and z_free["z_std"] < 0.7 * z_sg["z_std"]



@pytest.mark.parametrize("fixed", [True, False])
def test_the_predictor_trains_at_a_fixed_lr_through_pretrain(image_folder, tmp_path, fixed):
    """The composition root gives SimSiam's predictor a fixed-lr group (the paper's default), the rest the
    schedule; with ``fixed_predictor_lr: false`` every group follows the schedule."""
    from byol.train.pretrain import build_pretrain

    cfg = build_config(files=[find_preset("tiny")], overrides=[
        "method.name=simsiam", f"method.fixed_predictor_lr={str(fixed).lower()}", f"data.source={image_folder}",
        f"data.cache_dir={tmp_path / 'cache'}"])
    run = build_pretrain(cfg, None)
    opt, predictor = run.trainer.opt, run.method.predictor
    held = [g for g in opt.param_groups if "fixed_lr" in g]
    if fixed:
        assert {id(p) for g in held for p in g["params"]} == {id(p) for p in predictor.parameters()}
        assert all(g["fixed_lr"] == pytest.approx(run.trainer.o.peak_lr) for g in held)
    else:
        assert held == []

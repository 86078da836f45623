"""Barlow Twins: the loss against an independent NumPy loop, its zero on whitened identical embeddings, the
global batch over two processes, its config section, and what the redundancy term does to the embeddings."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from byol.errors import ConfigError
from byol.methods import METHODS, build_method, config_class
from byol.methods.barlowtwins import BarlowTwins, BarlowTwinsConfig, barlow_twins_loss, cross_correlation
from byol.models import build_backbone
from byol.train.monitor import collapse_stats


def _backbone():
    return build_backbone("convnet", in_channels=1, widths=[4, 8])


def _bt(seed=0, **kw):
    torch.manual_seed(seed)
    return build_method(BarlowTwinsConfig(**{"proj_hidden": 16, "proj_dim": 6, **kw}), _backbone)


def _np_loss(z1, z2, lam, eps=1e-5):
    """Each dimension standardized along the batch (biased variance, BN's eps), C by an explicit sum over the
    batch, then the loss as written in the paper: a double loop over (i, j)."""
    z1, z2 = (np.asarray(z, dtype=np.float64) for z in (z1, z2))
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1.0 - c_ij) ** 2 if i == j else lam * c_ij ** 2
    return loss


@pytest.mark.parametrize("lam", [0.0051, 0.5, 0.0])
def test_loss_is_the_papers_formula_with_each_view_through_its_own_forward_pass(lam):
    m = _bt(off_diagonal_weight=lam)
    assert isinstance(m, BarlowTwins) and METHODS["barlowtwins"] is BarlowTwins
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(7, 1, 8, 8, generator=g), torch.randn(7, 1, 8, 8, generator=g)
    out = m(v1, v2)
    with torch.no_grad():
        z1, z2 = ref.projector(ref.encoder(v1)), ref.projector(ref.encoder(v2))
        joint = ref.projector(ref.encoder(torch.cat([v1, v2])))
    assert out["loss"].item() == pytest.approx(_np_loss(z1.numpy(), z2.numpy(), lam), rel=1e-5)
    torch.testing.assert_close(out["proj"], z1)
    assert not torch.allclose(joint[:7], z1, atol=1e-4)  # BN statistics are per view, not over both


def test_cross_correlation_and_loss_are_float32_under_bf16_autocast():
    m = _bt(proj_dim=24)
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(2)
    v1, v2 = torch.randn(16, 1, 8, 8, generator=g), torch.randn(16, 1, 8, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(v1, v2)
        with torch.no_grad():
            z1, z2 = ref.projector(ref.encoder(v1)), ref.projector(ref.encoder(v2))
    assert z1.dtype == torch.bfloat16 and out["loss"].dtype == torch.float32
    # the bf16 projections, then everything after them in float64 (bf16 products fail this by far)
    assert out["loss"].item() == pytest.approx(_np_loss(z1.float().numpy(), z2.float().numpy(), 0.0051), rel=1e-5)


def test_projector_is_three_linear_layers_with_bn_and_relu_on_the_hidden_two():
    m = _bt()
    kinds = [type(layer).__name__ for layer in m.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert [layer.out_features for layer in m.projector if isinstance(layer, torch.nn.Linear)] == [16, 16, 6]
    assert not m.standardize.affine and not list(m.standardize.parameters())
    assert {id(p) for mod in m.trainable_modules() for p in mod.parameters()} == {id(p) for p in m.parameters()}
    assert m.after_step(0, 10) == {}


def _whitened(n, d, seed=0):
    """[n, d] embeddings whose columns have mean 0, (biased) variance 1 and are uncorrelated: sqrt(n) times
    an orthonormal basis of a subspace of the centered vectors (QR of centered random columns)."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return q * n ** 0.5


def test_loss_is_zero_for_identical_whitened_embeddings_and_positive_otherwise():
    z = _whitened(12, 4)
    torch.testing.assert_close(cross_correlation(z, z), torch.eye(4, dtype=torch.float32), atol=1e-6, rtol=0)
    assert barlow_twins_loss(cross_correlation(z, z), 0.0051).item() == pytest.approx(0.0, abs=1e-10)
    # the method's own standardization keeps them (up to BN's eps)
    m = _bt(proj_dim=4)
    assert barlow_twins_loss(cross_correlation(m.standardize(z.float()), m.standardize(z.float())),
                             0.0051).item() == pytest.approx(0.0, abs=1e-8)
    # identical but redundant: two equal dimensions give C_01 = C_10 = 1, the off-diagonal term only
    red = torch.cat([z[:, :1], z[:, :3]], dim=1)
    assert barlow_twins_loss(cross_correlation(red, red), 0.5).item() == pytest.approx(2 * 0.5, rel=1e-5)
    # decorrelated but not invariant: view 2's dimensions permuted, every C_ii = 0 and 4 of C_ij = 1
    perm = z[:, [1, 2, 3, 0]]
    assert barlow_twins_loss(cross_correlation(z, perm), 0.5).item() == pytest.approx(4 + 0.5 * 4, rel=1e-5)


def test_section_defaults_are_the_papers_and_ranges_are_checked():
    c = config_class("barlowtwins")()
    assert isinstance(c, BarlowTwinsConfig)
    assert (c.name, c.proj_hidden, c.proj_dim, c.off_diagonal_weight) == ("barlowtwins", 8192, 8192, 0.0051)
    assert BarlowTwinsConfig(off_diagonal_weight=0.0).off_diagonal_weight == 0.0  # the invariance term alone
    for bad in ({"off_diagonal_weight": -0.1}, {"proj_dim": 0}, {"proj_hidden": 0}):
        with pytest.raises(ConfigError, match=f"method.{next(iter(bad))}"):
            BarlowTwinsConfig(**bad)


def _rank_worker(rank, world, init_file, views, out_dir):
    import torch.distributed as tdist

    from byol.runtime.parallel import convert_sync_bn

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = convert_sync_bn(_bt(off_diagonal_weight=0.3), torch.device("cpu"))
        n = views[0].shape[0] // world
        loss = m(*(v[rank * n:(rank + 1) * n] for v in views))["loss"]
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": {k: p.grad for k, p in m.named_parameters()}},
                   f"{out_dir}/{rank}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_of_half_the_batch_have_the_global_batch_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    g = torch.Generator().manual_seed(0)
    views = (torch.randn(8, 1, 8, 8, generator=g), torch.randn(8, 1, 8, 8, generator=g))
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_rank_worker, args=(world, str(tmp_path / "init"), views, str(tmp_path)), nprocs=world,
                       start_method=method)
    m = _bt(off_diagonal_weight=0.3)
    full = m(*views)["loss"]
    full.backward()
    outs = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    for out in outs:  # every process computes the loss of the global batch (C summed over processes)
        assert out["loss"].item() == pytest.approx(full.item(), rel=1e-5)
    for k, p in m.named_parameters():  # DDP averages the processes' gradients: that of the global batch
        mean = sum(o["grads"][k] for o in outs) / world
        # float rounding only (measured ~1e-6 of each tensor's norm; one process's own gradient is off by ~1)
        assert float((mean - p.grad).norm() / p.grad.norm()) < 1e-5, k


def _images_and_views(seed):
    """64 generated 3 x 16 x 16 images (low-frequency random patterns) and a view maker: Gaussian noise,
    and a horizontal flip of half of view 2."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(64, 3, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)

    def views():
        a, b = (x + 0.1 * torch.randn(x.shape, generator=g) for _ in range(2))
        flip = torch.rand(x.shape[0], generator=g) < 0.5
        b[flip] = b[flip].flip(-1)
        return a, b

    return x, views


def _eff_rank_after(off_diagonal_weight, steps, seed=0):
    """The collapse monitor's effective rank of the projections of the images after ``steps`` of SGD."""
    x, views = _images_and_views(seed)
    torch.manual_seed(seed)
    m = build_method(BarlowTwinsConfig(proj_hidden=32, proj_dim=16, off_diagonal_weight=off_diagonal_weight),
                     lambda: build_backbone("convnet", in_channels=3, widths=[8, 16]))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        loss = m(*views())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return collapse_stats(m(x, x)["proj"])["eff_rank"]


def test_redundancy_term_keeps_the_effective_rank_and_the_invariance_term_alone_loses_it():
    # measured over seeds 0-7 (150 steps, d = 16): with lambda = 0.0051 the rank ends at 0.90-1.10 of the
    # initial ~11.3-13.3, with lambda = 0 at 0.50-0.66 of it; the gap is at least 3.8
    start = _eff_rank_after(0.0051, 0)
    kept, lost = _eff_rank_after(0.0051, 150), _eff_rank_after(0.0, 150)
    assert kept > 0.85 * start and lost < 0.75 * start and kept - lost > 3, (start, kept, lost)

"""The online kNN monitor watches held-out train images, never the test split unless asked, and never
uses an image without a label (the -1 of a joined ``train+unlabeled`` split)."""

import pytest
import torch
from PIL import Image

from byol.config import find_preset
from byol.train.config import PretrainConfig, build_config
from byol.data import load_images
from byol.train.monitor import knn_monitor
from byol.train.pretrain import make_monitor


@pytest.fixture
def split_folder(tmp_path):
    """``root/train/{a,b}`` (20 random 8x8 grey images each) and ``root/test/{a,b}`` (4 each, all white:
    no train image is white, so a query's pixels tell which split it came from)."""
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "photos"
    for split, n in (("train", 20), ("test", 4)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                px = torch.randint(0, 200, (8, 8), generator=g, dtype=torch.uint8) if split == "train" else \
                    torch.full((8, 8), 255, dtype=torch.uint8)
                Image.fromarray(px.numpy()).save(root / split / cls / f"{i}.png")
    return root


def _monitor(folder, tmp_path, *overrides):
    cfg = build_config(files=[find_preset("tiny")], overrides=[
        f"data.source={folder}", f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    train = load_images(str(folder), "train", cache_dir=tmp_path / "cache", progress=False)
    return make_monitor(cfg, train, 8, [0.5], [0.25], torch.device("cpu"))


def test_queries_are_held_out_of_train_by_default(split_folder, tmp_path):
    assert PretrainConfig().data.eval_split is None
    mon = _monitor(split_folder, tmp_path)
    assert len(mon.queries) == 40 // 5 and (mon.queries < 255).any(dim=(1, 2, 3)).all()  # train images only
    bank = {tuple(x.flatten().tolist()) for x in mon.bank}
    assert not any(tuple(q.flatten().tolist()) in bank for q in mon.queries)  # disjoint from the bank
    explicit = _monitor(split_folder, tmp_path, "data.eval_split=test")
    assert len(explicit.queries) == 8 and (explicit.queries == 255).all()  # set explicitly: the test split


def test_images_without_a_label_are_neither_bank_nor_queries():
    images = torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1).expand(30, 1, 4, 4).contiguous()
    labels = torch.tensor([0, 1] * 5 + [-1] * 20)
    mon = knn_monitor(images, labels, bank=100, queries=100, size=4, mean=[0.5], std=[0.25], k=3,
                      device=torch.device("cpu"), seed=0)
    seen = torch.cat([mon.bank, mon.queries])[:, 0, 0, 0]
    assert sorted(seen.tolist()) == list(range(10))  # the 10 labeled images: 2 queries (10 // 5), 8 in the bank
    assert len(mon.queries) == 2 and (torch.cat([mon.bank_labels, mon.query_labels]) >= 0).all()


def test_update_ratios_are_the_step_size_relative_to_the_weights():
    """One plain SGD step moves w by lr x grad: the ratio must be lr ||grad|| / ||w||, per weight matrix,
    with biases and frozen (target-like) layers left out."""
    from byol.train.monitor import snapshot, tracked_weights, update_ratios

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    frozen = torch.nn.Linear(3, 3).requires_grad_(False)
    model = torch.nn.ModuleDict({"online": net, "target": frozen})
    weights = tracked_weights(model)
    assert list(weights) == ["online.0", "online.2"]
    before = snapshot(weights)
    net(torch.randn(8, 5)).pow(2).sum().backward()
    lr = 0.05
    expected = {f"upd/online.{i}": (lr * net[i].weight.grad.norm() / net[i].weight.detach().norm()).item()
                for i in (0, 2)}
    torch.optim.SGD(net.parameters(), lr=lr).step()
    got = update_ratios(before, weights)
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-5)
    assert update_ratios(snapshot(weights), weights) == {k: 0.0 for k in expected}  # nothing moved


def _np_eff_rank(x):
    """Roy & Vetterli's effective rank of the centred, row-normalized batch, in NumPy."""
    import numpy as np

    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = s / s.sum()
    return float(np.exp(-(p * np.log(np.maximum(p, 1e-12))).sum()))


def test_dynamics_stats_against_numpy():
    """pred_eff_rank is the predictions' effective rank, the cosines are the mean row cosines with the
    projections; a missing tensor gives no key."""
    import numpy as np

    from byol.train.monitor import dynamics_stats, step_stats

    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 16, generator=g, dtype=torch.float64)
    p = z @ torch.randn(16, 16, generator=g, dtype=torch.float64)[:, :3] @ torch.randn(3, 16, generator=g,
                                                                                       dtype=torch.float64)
    t = z + 0.5 * torch.randn(64, 16, generator=g, dtype=torch.float64)
    s = dynamics_stats(z, p, t)
    zn = z.numpy() / np.linalg.norm(z.numpy(), axis=1, keepdims=True)
    def cos(a):
        a = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True)
        return float((a * zn).sum(axis=1).mean())
    assert s["pred_eff_rank"] == pytest.approx(_np_eff_rank(p.numpy()), rel=1e-5)
    assert s["pred_eff_rank"] < 3.5  # rank-3 predictions
    assert s["pred_cos_proj"] == pytest.approx(cos(p), abs=1e-6)
    assert s["target_cos_proj"] == pytest.approx(cos(t), abs=1e-6)
    assert 0.5 < s["target_cos_proj"] < 0.99
    assert dynamics_stats(z) == {}
    assert set(dynamics_stats(z, target=-z)) == {"target_cos_proj"}
    assert dynamics_stats(z, target=-z)["target_cos_proj"] == pytest.approx(-1.0)
    both = step_stats({"proj": z, "pred": p}, lambda x: x)
    assert both["eff_rank"] == pytest.approx(_np_eff_rank(z.numpy()), rel=1e-5) and "target_cos_proj" not in both


def test_uniform_codes_are_a_collapse_the_projections_spread_misses():
    """SwAV's failure with spread projections: every code uniform over the prototypes. The monitor reads the
    gathered mean of the method's per-sample ``code_entropy`` and names that collapse; spread projections
    with peaked codes are not one, and a projection collapse keeps its own message."""
    from byol.train.monitor import CODE_ENTROPY_LIMIT, collapse_reason, is_collapsed, step_stats

    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    # two ranks' rows: this rank's alone are above the limit, the global batch's mean is just below it
    halves = [torch.full((16,), CODE_ENTROPY_LIMIT + 0.004), torch.full((16,), CODE_ENTROPY_LIMIT - 0.006)]
    other_rank = {2: z.flip(0), 1: halves[1]}  # a fake gather: this rank's rows, then another's
    gathered = step_stats({"proj": z, "code_entropy": halves[0]}, lambda x: torch.cat([x, other_rank[x.dim()]]))
    assert gathered["code_entropy"] == pytest.approx(CODE_ENTROPY_LIMIT - 0.001, abs=1e-6)
    assert not is_collapsed(gathered) and collapse_reason(gathered) is None
    uniform = step_stats({"proj": z, "code_entropy": torch.ones(32)}, lambda x: x)
    assert uniform["z_std"] > 0.5 * uniform["z_std_ref"]  # the projections are spread
    reason = collapse_reason(uniform)
    assert is_collapsed(uniform) and reason.startswith("code collapse suspected: the codes' mean normalized "
                                                       "entropy is 1.0000")
    assert "code_entropy" not in step_stats({"proj": z}, lambda x: x)  # a method without codes: no key
    point = step_stats({"proj": torch.ones(32, 16), "code_entropy": torch.ones(32)}, lambda x: x)
    assert collapse_reason(point).startswith("representation collapse suspected")  # the projections first

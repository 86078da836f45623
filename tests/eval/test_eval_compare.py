"""byol.eval.compare.evaluate_encoders: the side-by-side table of ``byol demo``."""

import pytest
import torch
from torch import nn

from byol.data import ImageSet
from byol.eval.compare import evaluate_encoders
from byol.models import build_backbone


class Constant(nn.Module):
    """A collapsed encoder: the same features for every image."""

    def forward(self, x):
        return torch.ones(x.shape[0], 4)


def test_every_encoder_gets_linear_and_knn_and_raw_pixels_only_linear(labeled_images):
    images, labels = labeled_images
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    tr, te = perm[:90].sort().values, perm[90:].sort().values
    train = ImageSet(images[tr], labels[tr], ["a", "b", "c"], "train")
    test = ImageSet(images[te], labels[te], ["a", "b", "c"], "test")
    torch.manual_seed(0)
    encoders = {"net": build_backbone("convnet", in_channels=1, widths=[4, 8]), "collapsed": Constant()}
    res = evaluate_encoders(encoders, train, test, size=16, mean=[0.3], std=[0.3], device="cpu", k=5)
    assert set(res["linear"]) == {"net", "collapsed", "raw_pixels"} and set(res["knn"]) == {"net", "collapsed"}
    majority = 100 * torch.bincount(labels[te]).max().item() / len(te)
    assert res["knn"]["collapsed"] <= majority + 1e-9 and res["linear"]["collapsed"] <= majority + 1e-9
    assert res["linear"]["raw_pixels"] > 90  # 3 easy classes
    assert res["knn"]["net"] > res["knn"]["collapsed"]
    assert evaluate_encoders({}, train, test, size=16, mean=[0.3], std=[0.3], device="cpu",
                             raw_pixels=False) == {"linear": {}, "knn": {}}


def test_side_by_side_probes_match_one_thread_sequential_runs_and_restore_threads():
    from byol.eval.compare import run_side_by_side
    from byol.eval.linear import linear_eval

    g = torch.Generator().manual_seed(0)
    data = []
    for d in (40, 12, 25):
        y = torch.randint(0, 3, (300,), generator=g)
        x = torch.randn(300, d, generator=g) + torch.randn(3, d, generator=g)[y]
        data.append((x, y))

    def job(i):
        x, y = data[i]
        return lambda: linear_eval(x[:200], y[:200], x[200:], y[200:])["top1"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = {f"p{i}": job(i)() for i in range(3)}
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(2)
    try:
        got = run_side_by_side({f"p{i}": job(i) for i in (2, 0, 1)}, "cpu")
        assert torch.get_num_threads() == 2
        assert list(got) == ["p2", "p0", "p1"] and got == expected  # bitwise: each fit single-threaded

        def boom():
            raise ValueError("bad probe")
        with pytest.raises(ValueError, match="bad probe"):
            run_side_by_side({"a": job(0), "b": boom}, "cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)

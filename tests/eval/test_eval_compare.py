"""byol.eval.compare.evaluate_encoders: the side-by-side table of ``byol demo``."""

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

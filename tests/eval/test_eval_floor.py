"""The fair random-init floor: BN statistics recalibrated on training images (byol.eval.floor)."""

import numpy as np
import pytest
import torch
from torch import nn

from byol.eval import extract_features, knn_eval
from byol.eval.floor import has_batch_norm, recalibrate_bn, stronger
from byol.models import build_backbone

VIEW = dict(size=16, mean=[0.5], std=[0.25])


def _conv_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.Flatten())


def test_statistics_are_the_average_of_the_batch_statistics_computed_independently(labeled_images):
    images, _ = labeled_images
    model = _conv_bn()
    out = recalibrate_bn(model, images, **VIEW, seed=3, max_images=50, batch_size=25)
    # the reference: the same draw, the conv by numpy-free torch ops on float64, per-batch mean/var averaged
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(3))[:50].sort().values
    x = (images[index].double() / 255 - 0.5) / 0.25
    y = nn.functional.conv2d(x, model[0].weight.detach().double())
    means, variances = [], []
    for part in y.split(25):
        c = part.transpose(0, 1).reshape(3, -1).numpy()
        means.append(c.mean(1))
        variances.append(c.var(1, ddof=1))
    bn = out[1]
    np.testing.assert_allclose(bn.running_mean.numpy(), np.mean(means, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), np.mean(variances, 0), rtol=1e-5, atol=1e-6)
    assert not out.training
    # the caller's model is untouched: still BN's initial statistics
    assert torch.equal(model[1].running_mean, torch.zeros(3)) and torch.equal(model[1].running_var, torch.ones(3))
    assert torch.equal(out[0].weight, model[0].weight)


def test_seeded_and_reproducible(labeled_images):
    images, _ = labeled_images
    model = _conv_bn()
    a = recalibrate_bn(model, images, **VIEW, seed=1, max_images=30)
    b = recalibrate_bn(model, images, **VIEW, seed=1, max_images=30)
    c = recalibrate_bn(model, images, **VIEW, seed=2, max_images=30)
    assert torch.equal(a[1].running_mean, b[1].running_mean) and torch.equal(a[1].running_var, b[1].running_var)
    assert not torch.equal(a[1].running_mean, c[1].running_mean)


def _faint_classes() -> tuple[torch.Tensor, torch.Tensor]:
    """180 noisy 16x16 images whose 3 classes differ by a faint pattern (a hard set: not every floor is 100%)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 200, (180, 1, 16, 16), generator=g, dtype=torch.uint8)
    images[:60, :, 4:12, 4:12] += 40
    images[60:120, :, :, ::4] += 40
    labels = torch.arange(3).repeat_interleave(60)
    return images, labels


def test_recalibration_changes_the_floor_where_bn_matters():
    """A random CNN scored with BN's initial statistics vs recalibrated ones: the kNN accuracy changes."""
    images, labels = _faint_classes()
    torch.manual_seed(0)
    net = build_backbone("convnet", in_channels=1, widths=[8, 16])
    tuned = recalibrate_bn(net, images[::2], **VIEW, seed=0)  # train half only
    scores = {}
    for name, enc in (("initial", net.eval()), ("recalibrated", tuned)):
        tr = extract_features(enc, images[::2], **VIEW, batch_size=64, device="cpu")
        te = extract_features(enc, images[1::2], **VIEW, batch_size=64, device="cpu")
        scores[name] = knn_eval(tr, labels[::2], te, labels[1::2], k=(5,))["k5"]
    assert has_batch_norm(net)
    assert scores["recalibrated"] != scores["initial"]
    assert stronger(scores) == max(scores.items(), key=lambda kv: kv[1])


def test_a_model_without_bn_is_returned_unchanged(labeled_images):
    images, _ = labeled_images
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    out = recalibrate_bn(model, images, **VIEW)
    assert not has_batch_norm(out) and out is not model
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), out.parameters()))


def test_stronger_keeps_the_first_on_ties():
    assert stronger({"a": 1.0, "b": 2.0}) == ("b", 2.0)
    assert stronger({"a": 2.0, "b": 2.0}) == ("a", 2.0)


def _folder(root, images, labels):
    from PIL import Image

    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / ("train" if i % 3 else "val") / f"c{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(d / f"{i:03d}.png")
    return root


def test_eval_random_init_scores_both_variants_and_names_the_stronger(tmp_path, capsys, monkeypatch):
    import json

    import byol.eval.floor as floor
    from byol.cli import main

    images, labels = _faint_classes()
    root = _folder(tmp_path / "faint", images, labels)
    seen = []
    real = floor.recalibrate_bn

    def spy(encoder, imgs, **kw):
        seen.append(imgs.clone())
        return real(encoder, imgs, **kw)

    monkeypatch.setattr(floor, "recalibrate_bn", spy)
    out = tmp_path / "out"
    assert main(["eval", "knn", "--random-init", "--backbone", "convnet", "--dataset", str(root), "--k", "5",
                 "--out-dir", str(out), "--no-cache", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    initial = json.loads((out / "knn-faint.json").read_text())
    tuned = json.loads((out / "knn-faint-bn-recalibrated.json").read_text())
    assert tuned["encoder"]["backbone"]["bn"].startswith("recalibrated on 120 train images")
    a, b = initial["metrics"]["k5"], tuned["metrics"]["k5"]
    assert a != b  # a different network's score
    best = max((a, "initial BN statistics"), (b, "BN recalibrated"))
    assert f"fair random-init floor, the stronger variant: k5 {best[0]:.2f}% ({best[1]})" in printed
    assert "random-init, initial BN statistics:" in printed and "random-init, BN recalibrated on 120" in printed
    # the statistics came from the 120 train images (every third image is val: never seen)
    assert len(seen) == 1 and seen[0].shape[0] == 120


def test_eval_raw_pixels_is_the_pixel_probe_and_cannot_be_fine_tuned(tmp_path, capsys):
    import json

    from byol.cli import main
    from byol.eval import knn_eval

    images, labels = _faint_classes()
    root = _folder(tmp_path / "faint", images, labels)
    out = tmp_path / "out"
    assert main(["eval", "knn", "--raw-pixels", "--dataset", str(root), "--k", "5", "--out-dir", str(out),
                 "--no-cache", "--threads", "1", "--input-size", "16"]) == 0
    card = json.loads((out / "knn-faint.json").read_text())
    # the reference: the pixels, normalised as every encoder's input (the data set's mean/std), by kNN
    train = torch.tensor([i for i in range(180) if i % 3])
    val = torch.tensor([i for i in range(180) if not i % 3])
    x = images.float() / 255
    mean, std = x[train].mean(), x[train].std()
    ref = knn_eval(((x[train] - mean) / std).flatten(1), labels[train], ((x[val] - mean) / std).flatten(1),
                   labels[val], k=(5,))["k5"]
    assert card["metrics"]["k5"] == pytest.approx(ref, abs=1e-3)  # cards keep 4 decimals
    assert main(["eval", "finetune", "--raw-pixels", "--dataset", str(root)]) == 2
    assert "raw pixels have no weights to fine-tune" in capsys.readouterr().err

"""The end-of-run verdict: the encoder against the same architecture at random init, by kNN on held-out
training images; a collapsed run never passes."""

import json

import pytest
import torch
from PIL import Image
from torch import nn

from byol.cli import main
from byol.eval import extract_features, knn_eval
from byol.eval.floor import VARIANTS, recalibrate_bn
from byol.data import load_images
from byol.models import build_backbone
from byol.models.factory import build_encoder
from byol.run.files import run_sizes
from byol.train.config import load_run_config
from byol.train.verdict import MAX_BANK, MAX_QUERIES, margin, random_init_verdict, verdict_lines, verdict_split

KW = dict(size=16, mean=[0.4], std=[0.3], device=torch.device("cpu"))


def noisy_shapes(n_per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes of 16x16 grey images (a bright square, a large dim square, stripes) under heavy noise:
    a random-init convnet's kNN is well above chance (33%) but far from 100%."""
    g = torch.Generator().manual_seed(seed)
    n = n_per_class
    x = torch.randint(0, 200, (3 * n, 1, 16, 16), generator=g, dtype=torch.int32)
    x[:n, :, 4:12, 4:12] += 60
    x[n : 2 * n, :, 2:14, 2:14] += 30
    x[2 * n :, :, :, ::3] += 60
    return x.clamp(0, 255).to(torch.uint8), torch.arange(3).repeat_interleave(n)


class Constant(nn.Module):
    """A fully collapsed encoder: the same feature for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.ones(1, 8))

    def forward(self, x):
        return self.anchor.expand(x.shape[0], -1)


def _random_init(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_backbone("convnet", in_channels=1, widths=[8, 16])


def test_split_is_stratified_capped_disjoint_and_skips_unlabeled():
    labels = torch.cat([torch.arange(5).repeat_interleave(12000), torch.full((1000,), -1)])
    bank, queries = verdict_split(labels, seed=0)
    assert len(queries) == MAX_QUERIES and len(bank) == MAX_BANK
    assert not set(bank.tolist()) & set(queries.tolist()) and (labels[torch.cat([bank, queries])] >= 0).all()
    assert torch.bincount(labels[queries]).tolist() == pytest.approx([400] * 5, abs=60)  # about stratified
    small = torch.arange(3).repeat_interleave(40)
    bank, queries = verdict_split(small, seed=0)
    assert len(queries) == 12 and len(bank) == 108 and torch.bincount(small[queries]).tolist() == [4, 4, 4]
    assert torch.equal(verdict_split(small, seed=0)[1], queries)  # seeded
    assert not torch.equal(verdict_split(small, seed=1)[1], queries)


def test_margin_is_two_standard_errors_of_a_difference_with_a_floor():
    assert margin(2000) == pytest.approx(3.162, abs=1e-3) and margin(60) == pytest.approx(18.26, abs=0.01)
    assert margin(10**6) == 2.0


def test_a_constant_encoder_is_not_better_than_random_init():
    images, labels = noisy_shapes(60)
    random_encoder = _random_init(1)
    v = random_init_verdict(Constant(), random_encoder, images, labels, **KW, seed=0)
    bank, queries = verdict_split(labels, 0)
    expected = {}
    tuned = recalibrate_bn(random_encoder, images[bank], **KW, seed=0)  # the bank's images only, no queries
    for variant, enc in zip(VARIANTS, (random_encoder, tuned)):
        fb, fq = (extract_features(enc, images[i], **KW) for i in (bank, queries))
        expected[variant] = knn_eval(fb, labels[bank], fq, labels[queries], k=(20,))["k20"]
    assert v["random_init_variants"] == pytest.approx(expected, abs=0.01)
    assert v["random_init_knn"] == pytest.approx(max(expected.values()), abs=0.01)
    assert v["floor"] == max(expected, key=expected.get)
    assert 45 < v["random_init_knn"] < 95  # above chance, not perfect: the comparison means something
    assert v["encoder_knn"] == pytest.approx(100 / 3, abs=0.5) and v["chance"] == pytest.approx(33.33)
    assert v["better"] is False and v["passed"] is False and v["gain"] < -10
    assert (v["queries"], v["bank"], v["held_out"], v["k"]) == (18, 162, "10% of train", 20)
    lines = verdict_lines(v)
    assert lines[0].startswith("BYOL encoder: 33.3% kNN, random init ")
    other = [k for k in VARIANTS if k != v["floor"]][0]
    assert f"% ({v['floor']}; {other} {v['random_init_variants'][other]:.1f}%): " in lines[0]
    assert "(held-out 10% of train: 18 queries" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("warning: the BYOL encoder is not better than random init")


def test_a_better_encoder_passes_unless_its_projections_collapsed():
    images, labels = noisy_shapes(60)
    pixels = nn.Flatten()  # raw pixels separate these classes far better than a collapsed encoder
    healthy = {"z_std": 0.2, "z_std_ref": 0.25}
    v = random_init_verdict(pixels, Constant(), images, labels, **KW, seed=0, name="SimCLR", collapse=healthy)
    assert v["better"] and v["passed"] and not v["collapsed"] and v["gain"] >= v["margin"]
    assert verdict_lines(v) == [f"SimCLR encoder: {v['encoder_knn']:.1f}% kNN, random init 33.3% (initial BN "
                                f"statistics; BN recalibrated 33.3%): "
                                f"{v['gain']:+.1f} (held-out 10% of train: 18 queries, bank 162; k=20)"]
    collapsed = {"z_std": 0.002, "z_std_ref": 0.25}
    v = random_init_verdict(pixels, Constant(), images, labels, **KW, seed=0, collapse=collapsed)
    assert v["better"] and v["collapsed"] and not v["passed"]
    assert "projections collapsed (per-dimension std 0.0020" in verdict_lines(v)[-1]
    codes = {"z_std": 0.2, "z_std_ref": 0.25, "code_entropy": 0.998}  # spread projections, uniform codes
    v = random_init_verdict(pixels, Constant(), images, labels, **KW, seed=0, name="SwAV", collapse=codes)
    assert v["better"] and v["collapsed"] and not v["passed"] and v["collapse"] == "code collapse suspected"
    assert verdict_lines(v)[-1].startswith("warning: this run failed: its codes collapsed (mean normalized "
                                           "entropy 0.9980 at the end")


def test_the_recalibration_sees_only_bank_images(monkeypatch):
    import byol.train.verdict as verdict

    seen = {}
    real = verdict.recalibrate_bn

    def spy(encoder, images, **kw):
        seen["pool"] = kw["pool"]
        return real(encoder, images, **kw)

    monkeypatch.setattr(verdict, "recalibrate_bn", spy)
    images, labels = noisy_shapes(60)
    random_init_verdict(Constant(), _random_init(1), images, labels, **KW, seed=0)
    bank, queries = verdict_split(labels, 0)
    assert torch.equal(seen["pool"], bank) and not set(seen["pool"].tolist()) & set(queries.tolist())


def test_too_few_labels_is_a_skip():
    images, labels = noisy_shapes(1)
    v = random_init_verdict(Constant(), Constant(), images, labels, **KW, seed=0)
    assert "skipped" in v and verdict_lines(v)[0].startswith("verdict: skipped (too few labeled images")


@pytest.fixture
def noisy_folder(tmp_path):
    root = tmp_path / "noisy"
    images, labels = noisy_shapes(400)
    for i, (img, y) in enumerate(zip(images, labels)):
        (root / f"c{int(y)}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(root / f"c{int(y)}" / f"{i:04d}.png")
    return root


def test_a_collapsed_run_does_not_pass(noisy_folder, tmp_path, capsys):
    # No predictor, the target is the online network of the last step, and a high lr: the projections
    # collapse within two epochs. The encoder keeps what it learned before that, so its kNN can still be
    # above random init's (here by a little less than the margin); the run fails on the collapse.
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", "--data", str(noisy_folder), "--run-dir", str(run),
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "method.use_predictor=false",
                 "--set", "method.tau_schedule=constant", "--set", "method.tau_base=0", "--set", "optim.base_lr=5",
                 "--set", "train.epochs=3", "--set", "train.knn_every=0", "--threads", "1"]) == 0
    v = json.loads((run / "summary.json").read_text())["verdict"]
    assert v["z_std"] < 0.1 * v["z_std_ref"]  # what the collapse monitor calls a collapse
    assert v["collapsed"] and not v["passed"] and v["queries"] == 120 and v["bank"] == 1080
    out = capsys.readouterr().out
    assert "BYOL encoder: " in out and "warning: this run failed: its projections collapsed" in out
    # the baseline: the run's architecture at seed train.seed + 1, fed the run's view size and mean/std
    cfg = load_run_config(run)
    data = load_images(str(noisy_folder), cache_dir=tmp_path / "cache", progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed + 1)
        baseline = build_encoder(cfg.model, 1)
    kw = dict(size=run_sizes(run, {}).view, mean=cfg.data.mean, std=cfg.data.std)  # the sizes the run stored
    bank, queries = verdict_split(data.labels, cfg.train.seed)
    expected = {}
    tuned = recalibrate_bn(baseline, data.images[bank], **kw, seed=cfg.train.seed)  # the fair floor: bank only
    for variant, enc in zip(VARIANTS, (baseline, tuned)):
        fb, fq = (extract_features(enc, data.images[i], **kw) for i in (bank, queries))
        expected[variant] = knn_eval(fb, data.labels[bank], fq, data.labels[queries], k=(20,))["k20"]
    assert v["random_init_variants"] == pytest.approx(expected, abs=0.01)
    assert v["random_init_knn"] == pytest.approx(max(expected.values()), abs=0.01)
    assert 45 < v["random_init_knn"] < 95

"""End to end on real Fashion-MNIST (slow; skipped where the Debian package is not installed, failed there
under BYOL_REQUIRE_REAL_DATA=1, as in CI).

A slice of the training set is pretrained through the command line with the CPU demo preset for a few
fixed epochs, then evaluated through the command line (kNN, linear) and exported. The accuracy floor is
the same architecture at random init *plus a margin*: a broken BYOL (no EMA, collapse, wrong loss sign,
views that ignore the image) ends at or below random init, so it cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from byol.cli import main

pytestmark = pytest.mark.slow

EPOCHS = 4  # 4 x 234 steps of batch 128 on 30,000 images: ~2 minutes here
# Measured 2026-12-07 (Intel Xeon, bf16, seed 0): kNN 85.41 against the fair floor's 82.63 (initial BN
# statistics; 82.13 recalibrated), linear 87.06.
# The same network at random init scores 83.3-84.5 linear and raw pixels 84.7 (docs/results.md), so a
# run that learns nothing (lr 0, frozen encoder, collapse) stays below both floors.
KNN_MARGIN = 0.5
LINEAR_FLOOR = 85.5


@pytest.fixture(scope="module")
def real_fashion_mnist(real_fashion_mnist_dir):
    """The installed data (tests/conftest.py: skipped where missing, failed under BYOL_REQUIRE_REAL_DATA=1)."""
    return real_fashion_mnist_dir


def _run(*args) -> int:
    return main([str(a) for a in args])


def test_pretrain_slice_beats_random_init(real_fashion_mnist, tmp_path):
    from byol.models.factory import build_encoder
    from byol.run.files import load_encoder
    from byol.train.config import build_config
    from byol.data import load_images
    from byol.eval import extract_features, knn_eval
    from byol.eval.floor import recalibrate_bn

    run, cache = tmp_path / "run", tmp_path / "cache"
    assert _run("pretrain", "--config", "fashion-mnist", "--run-dir", run, "--no-progress",
                "--set", "data.limit=30000", "--set", "train.budget=null", "--epochs", EPOCHS,
                "--set", f"data.cache_dir={cache}", "--set", "data.knn_bank=2000", "--set", "data.knn_queries=1000") == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "completed"
    assert summary["steps"] == EPOCHS * (30000 // 128)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < 0.6 * losses[0]  # the regression loss really went down (it starts near 2 x 2)

    # kNN and linear through the CLI, on the full 60k / 10k
    assert _run("eval", "knn", "--checkpoint", run, "--dataset", "fashion-mnist", "--k", 20, "--cache-dir", cache) == 0
    assert _run("eval", "linear", "--checkpoint", run, "--dataset", "fashion-mnist", "--cache-dir", cache) == 0
    knn = json.loads((run / "eval" / "knn-fashion-mnist.json").read_text())["metrics"]["k20"]
    lin = json.loads((run / "eval" / "linear-fashion-mnist.json").read_text())["metrics"]["top1"]

    # the same architecture at random init, the same protocol (library calls)
    enc, cfg = load_encoder(run)
    pc = build_config(extra=cfg)
    torch.manual_seed(1)
    rand = build_encoder(pc.model, 1)
    train = load_images("fashion-mnist", "train", cache_dir=cache, progress=False)
    test = load_images("fashion-mnist", "test", cache_dir=cache, progress=False)
    kw = dict(size=28, mean=cfg["data"]["mean"], std=cfg["data"]["std"])
    floors = {}  # the fair floor: BN's initial statistics and statistics recalibrated on train, the stronger
    for variant, net in (("initial", rand), ("recalibrated", recalibrate_bn(rand, torch.as_tensor(train.images), **kw))):
        ftr = extract_features(net, torch.as_tensor(train.images), **kw)
        fte = extract_features(net, torch.as_tensor(test.images), **kw)
        floors[variant] = next(iter(knn_eval(ftr, train.labels, fte, test.labels, k=(20,)).values()))
    knn_rand = max(floors.values())
    print(f"BYOL {EPOCHS} epochs on 30k: kNN {knn:.2f} (random init {floors}), linear {lin:.2f}")
    assert knn >= knn_rand + KNN_MARGIN
    assert lin >= LINEAR_FLOOR

    # export round trip: the torchvision-format file holds the same weights
    out = tmp_path / "enc.safetensors"
    assert _run("export", "--checkpoint", run, "--format", "safetensors", "--out", out) == 0
    from safetensors.torch import load_file

    sd = load_file(str(out))
    ref = enc.state_dict()
    assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)


def _assert_rows_are_the_encoders_probes(run: Path, res: dict) -> None:
    """The demo's kNN rows of BYOL and random init and its BYOL linear row, recomputed from the run's saved
    encoder and the demo's seeded random init (seed + 1) on the same 6,000 train / 10,000 test images."""
    from byol.data import load_images
    from byol.eval import extract_features, knn_eval, linear_eval
    from byol.models.factory import build_encoder
    from byol.run.files import load_encoder
    from byol.train.config import build_config
    from byol.train.pretrain import load_train_data

    enc, cfg = load_encoder(run)
    pc = build_config(extra=cfg)
    torch.manual_seed(pc.train.seed + 1)
    encoders = {"byol": enc, "random_init": build_encoder(pc.model, 1)}
    train = load_train_data(pc.data, seed=pc.train.seed, progress=False)
    test = load_images("fashion-mnist", "test", cache_dir=pc.data.cache_dir, progress=False)
    assert len(train) == 6000 and len(test) == 10000
    kw = dict(size=28, mean=cfg["data"]["mean"], std=cfg["data"]["std"])
    for name, encoder in encoders.items():
        ftr = extract_features(encoder, torch.as_tensor(train.images), **kw)
        fte = extract_features(encoder, torch.as_tensor(test.images), **kw)
        knn = next(iter(knn_eval(ftr, train.labels, fte, test.labels, k=(20,)).values()))
        assert res["knn"][name] == round(float(knn), 2), name
        if name == "byol":
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the demo's side-by-side probes run: the same sums, the same fit
            try:
                top1 = linear_eval(ftr, train.labels, fte, test.labels)["top1"]
            finally:
                torch.set_num_threads(threads)
            # measured 0.01 apart (one test image: L-BFGS stops at its tolerance on sums taken in another
            # order); the random-init row is 0.6 below, so 0.1 still tells the rows apart
            assert res["linear"]["byol"] == pytest.approx(top1, abs=0.1)


def test_demo_command_writes_the_side_by_side_table(real_fashion_mnist, tmp_path, capsys):
    """`byol demo` end to end on a slice (a short fixed run): every row of the table is filled by a real
    probe of the right network. The BYOL and random-init rows equal the probes of the saved encoder and of
    the seeded random init, recomputed here on the same images (a table that swapped, reused or mis-scored
    a row cannot pass: measured, linear 81.86 vs 81.25 and kNN 74.15 vs 77.05). Raw-pixel logistic
    regression on 6,000 Fashion-MNIST images scores ~82 % (a probe that fits nothing scores 10 %)."""
    run = tmp_path / "demo"
    assert _run("demo", "--run-dir", run, "--set", "data.limit=6000", "--set", "train.budget=null",
                "--set", "train.epochs=1", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                "--set", "data.knn_bank=2000", "--set", "data.knn_queries=1000", "--set", "train.progress=false") == 0
    res = json.loads((run / "results.json").read_text())
    floors = {"random_init", "random_init_bn"}  # the fair floor's two variants (initial / recalibrated BN)
    assert set(res["linear"]) == {"byol", *floors, "raw_pixels"} and set(res["knn"]) == {"byol", *floors}
    assert res["linear"]["raw_pixels"] >= 78
    _assert_rows_are_the_encoders_probes(run, res)
    # the recalibrated floor is a different network's score, and the claimed gain is over the stronger one
    assert (res["linear"]["random_init_bn"], res["knn"]["random_init_bn"]) != (res["linear"]["random_init"],
                                                                             res["knn"]["random_init"])
    for p in ("linear", "knn"):
        strongest = max(res[p]["random_init"], res[p]["random_init_bn"])
        assert res["gain_over_floor"][p] == pytest.approx(res[p]["byol"] - strongest, abs=0.011)
    assert res["epochs"] == pytest.approx(1.0, abs=1e-6)
    out = capsys.readouterr().out
    assert "raw_pixels" in out and "random init (BN recalibrated)" in out and f"{res['linear']['byol']:.2f}" in out
    assert f"BYOL over the stronger random init: linear {res['gain_over_floor']['linear']:+.2f}" in out
    assert (run / "curves.png").stat().st_size > 1000

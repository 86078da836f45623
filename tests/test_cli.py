"""End to end through the command line on generated images: pretrain -> checkpoint -> resume -> evaluate."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from byol.cli import main
from byol.run.files import load_encoder
from byol.eval import extract_features, knn_eval


def _run(args):
    return main([str(a) for a in args])


def test_pretrain_resume_evaluate(image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--config", "tiny", "--data", image_folder, "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert _run(["pretrain", *common, "--run-dir", run, "--set", "train.epochs=2"]) == 0
    for f in ("config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "skipped_files.txt"):
        assert (run / f).exists(), f
    assert "broken.png" in (run / "skipped_files.txt").read_text()
    assert json.loads((run / "env.json").read_text())["views"] in ("fused CPU kernel", "torch ops")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["steps"] == 2 * (120 // 16)
    assert any("knn_top1" in h for h in summary["history"])
    evals = [h["elapsed_s"] for h in summary["history"]]  # training seconds before each evaluation
    assert evals == sorted(evals) and 0 < evals[-1] <= summary["seconds"]
    verdict = summary["verdict"]  # 120 images, 3 classes: 12 held-out queries, the other 108 as the bank
    floors = verdict["random_init_variants"]  # the fair floor: the stronger of the two random-init variants
    assert set(floors) == {"initial BN statistics", "BN recalibrated"}
    assert verdict["random_init_knn"] == max(floors.values()) == floors[verdict["floor"]]
    assert verdict["gain"] == pytest.approx(verdict["encoder_knn"] - verdict["random_init_knn"], abs=0.011)
    assert (verdict["queries"], verdict["bank"], verdict["held_out"]) == (12, 108, "10% of train")
    out = capsys.readouterr().out
    assert f"BYOL encoder: {verdict['encoder_knn']:.1f}% kNN, random init {verdict['random_init_knn']:.1f}% (" in out
    # a second pretrain into the same directory refuses to clobber it
    assert _run(["pretrain", *common, "--run-dir", run]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # resume of a finished run: nothing left to train, the checkpoint stays loadable
    assert _run(["pretrain", "--resume", run]) == 0
    enc, cfg = load_encoder(run)
    assert cfg["model"]["backbone"] == "convnet"
    from byol.data import load_images

    data = load_images(str(image_folder), cache_dir=tmp_path / "cache", progress=False)
    f = extract_features(enc, torch.as_tensor(data.images), size=16, mean=cfg["data"]["mean"], std=cfg["data"]["std"])
    assert f.shape == (120, enc.feature_dim) and torch.isfinite(f).all()
    # kNN on a disjoint, stratified test split (a query that is also in the bank would find itself)
    from byol.eval.splits import stratified_split

    bank, queries = stratified_split(data.labels, 0.25, seed=0)
    assert not set(bank.tolist()) & set(queries.tolist())
    acc = knn_eval(f[bank], data.labels[bank], f[queries], data.labels[queries], k=(5,))
    assert next(iter(acc.values())) > 50  # 3 easy classes: far above chance (33%) even after 2 tiny epochs


@pytest.mark.parametrize("labeled, setting, reason", [(True, "train.verdict=false", "train.verdict is false"),
                                                      (False, "train.verdict=true", "the data has no labels")])
def test_the_verdict_is_skipped_and_said(image_folder, tmp_path, capsys, labeled, setting, reason):
    data = image_folder if labeled else image_folder / "class1"  # one class folder: a flat, unlabeled folder
    run = tmp_path / "run"
    assert _run(["pretrain", "--config", "tiny", "--data", data, "--run-dir", run, "--set", setting,
                 "--set", "train.epochs=0.5", "--set", "optim.batch_size=8", "--threads", 1]) == 0
    assert json.loads((run / "summary.json").read_text())["verdict"] == {"skipped": reason}
    assert f"verdict: skipped ({reason})" in capsys.readouterr().out


def test_pretrain_on_train_plus_unlabeled(tmp_path, labeled_images, capsys):
    # the STL-10 layout: train/<class>/ (120 images) and unlabeled/ (40 more, no labels)
    images, labels = labeled_images
    root = tmp_path / "stl"
    for i, (img, y) in enumerate(zip(images, labels)):
        (root / "train" / f"class{int(y)}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(root / "train" / f"class{int(y)}" / f"{i:03d}.png")
    (root / "unlabeled").mkdir()
    for i, img in enumerate(images[::3]):
        Image.fromarray(img[0].numpy()).save(root / "unlabeled" / f"u{i:03d}.png")
    run = tmp_path / "run"
    assert _run(["pretrain", "--config", "tiny", "--data", root, "--split", "train+unlabeled", "--run-dir", run,
                 "--set", "train.epochs=1", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--threads", 1]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == (120 + 40) // 16  # both parts are pretrained on
    assert (summary["verdict"]["queries"], summary["verdict"]["bank"]) == (12, 108)  # labels: train's only
    # 3 balanced classes: a constant (collapsed) encoder's kNN scores chance, 33%; this run scores 100%
    assert summary["history"][-1]["knn_top1"] > 60
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["split"] == "train+unlabeled"


@pytest.mark.parametrize(
    "args, message",
    [
        (["pretrain", "--config", "tiny", "--set", "optim.bogus=1"], "unknown config key 'optim.bogus'"),
        (["pretrain", "--config", "tiny", "--set", "optim.base_lr=abc"], "optim.base_lr: expected a number"),
        (["pretrain", "--config", "nope"], "config 'nope' not found"),
        (["pretrain", "--config", "tiny", "--data", "/no/such/folder"], "/no/such/folder"),
        (["pretrain", "--config", "tiny", "--budget", "ten minutes"], "bad duration"),
        (["pretrain", "--config", "tiny", "--set", "train.budget_pace_window=0"],
         "train.budget_pace_window must be positive"),
        (["pretrain", "--resume", "/no/such/run"], "not a run directory"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, message, capsys, tmp_path):
    assert _run(args + ["--run-dir", tmp_path / "r"] if args[1] != "--resume" else args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_show_views_writes_png(image_folder, tmp_path):
    out = tmp_path / "views.png"
    assert _run(["show-views", "--config", "tiny", "--data", image_folder, "--out", out, "--images", 3, "--views", 4,
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 16 * 3 and img.shape[1] > 16 * 5
    # the run's multi-crop small views are shown too: one more column each
    mc = tmp_path / "mc.png"
    assert _run(["show-views", "--config", "tiny", "--data", image_folder, "--out", mc, "--images", 3, "--views", 4,
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "views.small_crops=2"]) == 0
    wide = np.asarray(Image.open(mc))
    tile = (img.shape[1] - 2) // 5  # view side + padding
    assert wide.shape[0] == img.shape[0] and wide.shape[1] == img.shape[1] + 2 * tile


@pytest.mark.slow
def test_pretrain_with_compile_trains_and_keeps_checkpoint_keys(image_folder, tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    run = tmp_path / "run"
    common = ["--config", "tiny", "--data", image_folder, "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert _run(["pretrain", *common, "--run-dir", run, "--set", "train.epochs=1", "--set", "train.compile=true",
                 "--set", "train.knn_every=0"]) == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the forward really was compiled
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["method"])
    enc, _ = load_encoder(run)  # loads into a plain (uncompiled) encoder
    assert enc.feature_dim > 0


def test_compile_without_a_compiler_is_a_clear_error(image_folder, tmp_path, capsys, monkeypatch):
    import byol.train.pretrain as pretrain

    monkeypatch.setattr(pretrain.shutil, "which", lambda name: None)
    common = ["--config", "tiny", "--data", image_folder, "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert _run(["pretrain", *common, "--run-dir", tmp_path / "run", "--set", "train.compile=true",
                 "--device", "cpu"]) == 2
    assert "needs a C++ compiler" in capsys.readouterr().err


def test_help_lists_every_preset_with_its_description(capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    import yaml
    from byol.config import PRESETS_DIR

    presets = sorted(PRESETS_DIR.glob("*.yaml"))
    assert len(presets) >= 4
    for f in presets:
        desc = yaml.safe_load(f.read_text())["description"]
        assert f"  {f.stem}: {desc}" in out


def test_budget_pace_window_reaches_the_trainer(image_folder, tmp_path, monkeypatch):
    import byol.train.pretrain as pretrain

    seen = {}
    real = pretrain.Trainer

    def spy(*args, **kwargs):
        seen["window"] = kwargs["options"].budget_pace_window
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "Trainer", spy)
    assert _run(["pretrain", "--config", "tiny", "--data", str(image_folder), "--run-dir", tmp_path / "r",
                 "--set", "train.epochs=0.1", "--set", "train.budget_pace_window=7", "--set", "train.knn_every=0"]) == 0
    assert seen["window"] == 7


def test_a_folder_without_config_gets_the_folder_preset_and_a_short_plan_is_warned(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "photos" / f"c{c}").mkdir(parents=True)
        for i in range(150):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"c{c}" / f"{i}.png")
    run = tmp_path / "run"
    # a narrower network than the preset's, so that a loaded machine still makes many steps in 15 s
    assert _run(["pretrain", "--data", tmp_path / "photos", "--run-dir", run, "--budget", "15s",
                 "--set", "train.knn_every=0", "--set", "train.progress=false", "--set", "model.options.widths=[4,8]",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    err = capsys.readouterr().err
    assert "no --config: using the 'folder' preset" in err
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["data"]["image_size"] == 32 and resolved["model"]["backbone"] == "convnet"
    assert resolved["train"]["budget"] == "15s"
    summary = json.loads((run / "summary.json").read_text())
    (line,) = [ln for ln in err.splitlines() if "this budget buys" in ln]
    assert line.startswith("byol: warning: ") and "raise the budget to about" in line and "--image-size" in line
    assert summary["plan_warning"] in line and summary["steps"] > 8  # warned at the first plan, not at the end


def test_the_default_preset_of_a_folder_follows_the_device(tmp_path, monkeypatch, capsys):
    import torch

    from byol.cli.main import _default_preset, _preset_line

    folder = tmp_path / "photos"
    folder.mkdir()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _default_preset(str(folder)) == "folder-gpu"
    assert _default_preset(str(folder), "auto") == "folder-gpu"
    assert _default_preset(str(folder), "cpu") == "folder"  # --device cpu on a GPU machine
    assert _default_preset("cifar10") == "cifar10"  # a named data set keeps its own preset
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _default_preset(str(folder)) == "folder"
    assert _default_preset(str(folder), "cuda:1") == "folder-gpu"
    assert _preset_line("folder-gpu", "byol").startswith("byol: no --config: using the 'folder-gpu' preset (ResNet-18,")


def test_the_gpu_folder_preset_trains_on_a_cpu_when_shrunk(image_folder, tmp_path):
    """The GPU preset (ResNet-18, LARS, paper heads) runs through the same path; here at 32 px, batch 8."""
    run = tmp_path / "r"
    assert _run(["pretrain", "--config", "folder-gpu", "--data", image_folder, "--run-dir", run, "--device", "cpu",
                 "--image-size", 32, "--batch-size", 8, "--epochs", 0.2, "--no-progress", "--set", "train.budget=null",
                 "--set", "train.knn_every=0", "--set", "train.verdict=false",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["backbone"] == "resnet18" and resolved["optim"]["name"] == "lars"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["steps"] >= 1


@pytest.fixture
def photos40(tmp_path):
    """40 small photos in 2 classes: fewer than the folder preset's batch of 64."""
    rng = np.random.default_rng(1)
    for i in range(40):
        d = tmp_path / "photos40" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return tmp_path / "photos40"


def _default_path(folder, tmp_path, *extra):
    return _run(["pretrain", "--data", folder, "--run-dir", tmp_path / "run", "--epochs", 1, "--device", "cpu",
                 "--set", "train.knn_every=0", "--set", "train.verdict=false", "--set", "train.progress=false",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_the_default_preset_line_names_the_method_that_will_train(photos40, tmp_path, capsys):
    _default_path(photos40, tmp_path, "--method", "simclr")
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "no --config" in ln]
    assert "'folder' preset" in line and "simclr" in line and "BYOL" not in line, line
    assert "trained the better encoder" not in err
    _default_path(photos40, tmp_path, "--overwrite")  # BYOL, the default: the user hears what was measured
    (note,) = [ln for ln in capsys.readouterr().err.splitlines() if "trained the better encoder" in ln]
    assert note.startswith("byol: note: ") and "--method simclr" in note and "docs/results.md" in note, note


def test_a_folder_smaller_than_the_default_batch_fits_the_batch_on_the_default_path(photos40, tmp_path, capsys):
    assert _default_path(photos40, tmp_path) == 0
    (note,) = [ln for ln in capsys.readouterr().err.splitlines() if "batch" in ln and "40" in ln]
    assert "batch 40" in note and "0.6 x 40/256 = 0.0938" in note, note  # the folder preset's base_lr is 0.6
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["batch_size"] == 40
    for explicit in (["--batch-size", 64], ["--set", "optim.batch_size=64"]):  # asked for: still an error
        assert _default_path(photos40, tmp_path, "--overwrite", *explicit) == 2
        assert "lower optim.batch_size to 40 or less" in capsys.readouterr().err
    assert _default_path(photos40, tmp_path, "--overwrite", "--set", "optim.accum_steps=16") == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["batch_size"] == 32  # a multiple of 16
    assert _default_path(photos40, tmp_path, "--overwrite", "--set", "optim.accum_steps=32") == 2  # 1 image a pass
    assert "training images: use more images or fewer micro-batches" in capsys.readouterr().err

"""``byol pretrain --method simclr|moco|simsiam|barlowtwins|swav`` end to end on generated images: the loss goes down,
an interrupted run resumes to the same weights (MoCo's queue included), and the optimizer never sees a momentum
network."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from byol.cli import main
from byol.config import PRESETS_DIR, find_preset
from byol.train.config import build_config, validate_pretrain
from byol.methods import build_method, method_names
from byol.models import build_backbone
from byol.run.checkpoints import read_checkpoint


@pytest.fixture
def image_folder(tmp_path):
    """120 generated 16x16 RGB images in 3 class folders, each its own low-frequency random pattern.

    Contrastive methods learn to tell *instances* apart, so unlike tests/conftest.py's near-duplicate squares
    every image here is distinguishable after cropping (the pattern varies over 4 x 4 cells)."""
    g = torch.Generator().manual_seed(0)
    cells = torch.rand(120, 3, 4, 4, generator=g)
    images = (F.interpolate(cells, size=16, mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)
    root = tmp_path / "imgs"
    for i, img in enumerate(images):
        d = root / f"class{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:03d}.png")
    return root


def _run(args):
    return main([str(a) for a in args])


def _spy_trainer(monkeypatch, seen, stop_after=None):
    """Record the Trainer that ``byol pretrain`` builds; optionally ask it to stop after ``stop_after`` steps."""
    import byol.train.pretrain as pretrain

    real = pretrain.Trainer

    def spy(*args, **kwargs):
        trainer = real(*args, **kwargs)
        seen["trainer"] = trainer
        if stop_after is not None:
            augment, calls = trainer.augment, {"n": 0}

            def stopping(x, g):
                calls["n"] += 1
                if calls["n"] == stop_after:
                    trainer.request_stop()
                return augment(x, g)

            trainer.augment = stopping
        return trainer

    monkeypatch.setattr(pretrain, "Trainer", spy)


MOMENTUM_NETS = {"simclr": (), "moco": ("key_encoder", "key_projector"), "simsiam": (), "barlowtwins": (), "swav": ()}

# The tiny preset's 28 steps show a falling loss for SimCLR as is. MoCo's loss first *rises* while real keys
# replace the queue's random vectors, so its test uses a queue of 2 batches (full from step 3), keys that follow
# faster, 2 BN groups of 8, milder views and SGD, and compares only logs taken with a full queue. SimSiam's
# negative cosine barely moves in 28 steps of the tiny preset's LARS (-0.02 -> -0.04, noise-sized): SGD at a
# higher lr, a bottleneck predictor (32 -> 8 -> 32) and the same milder views take it from -0.02 to about -0.5.
# Barlow Twins' loss (d = 16, C from 16 pairs) does not fall in 28 steps of the tiny preset's views (measured:
# 18.1 ... 13.0, no trend); with the milder views it does (8.4 ... 2.8), the tiny preset's LARS otherwise unchanged.
MILD_VIEWS = ["views.both.crop_scale=[0.6,1.0]", "views.both.jitter_p=0", "views.both.gray_p=0"]
SETTINGS = {
    "simclr": [],
    "simsiam": ["optim.name=sgd", "optim.base_lr=4.0", "method.proj_dim=32", "method.pred_hidden=8",
                *MILD_VIEWS],
    "barlowtwins": MILD_VIEWS,
    # SwAV with everything that carries state: 2 small views (8 px), a queue of 2 batches filled from step 2 and
    # used once full, prototypes frozen for 3 steps
    "swav": ["method.prototypes=10", "method.queue_length=32", "method.queue_start_step=2",
             "method.freeze_prototypes_steps=3", "views.small_crops=2", *MILD_VIEWS],
    "moco": ["method.queue_size=32", "method.tau_base=0.99", "method.split_bn_groups=2", "optim.name=sgd",
             "optim.base_lr=2.0", *MILD_VIEWS],
}


@pytest.mark.parametrize("method", ["simclr", "moco", "simsiam", "barlowtwins", "swav"])
def test_pretrain_with_method_trains_checkpoints_and_resumes_exactly(method, image_folder, tmp_path, monkeypatch,
                                                                     resume_checks):
    common = ["pretrain", "--config", "tiny", "--method", method, "--data", image_folder, "--set", "train.epochs=4",
              "--set", "train.knn_every=0", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    for setting in SETTINGS[method]:
        common += ["--set", setting]
    seen = {}
    with monkeypatch.context() as mp:
        _spy_trainer(mp, seen)
        assert _run([*common, "--run-dir", tmp_path / "full"]) == 0
    full = tmp_path / "full"
    assert "name: " + method in (full / "config.yaml").read_text()
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    full_queue_from = 32 // 16 + 1 if method == "moco" else 0
    losses = [r["loss"] for r in rows if "loss" in r and r["step"] >= full_queue_from]
    assert len(losses) >= 10 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # decreasing-ish: the last logs below the first ones

    # the optimizer trains exactly trainable_modules(), which never holds a momentum network
    m, opt = seen["trainer"].method, seen["trainer"].opt
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for mod in m.trainable_modules() for p in mod.parameters()}
    assert optimized == trainable and {id(p) for p in m.encoder.parameters()} <= optimized
    for name in MOMENTUM_NETS[method]:
        net = getattr(m, name)
        assert all(net is not mod for mod in m.trainable_modules())
        assert not optimized & {id(p) for p in net.parameters()}

    # interrupted after 9 steps, then `--resume`: the same weights (and queue) as the uninterrupted run
    part = tmp_path / "part"
    with monkeypatch.context() as mp:
        _spy_trainer(mp, {}, stop_after=9)
        assert _run([*common, "--run-dir", part]) == 0
    assert read_checkpoint(part / "checkpoints" / "last.pt")["state"]["step"] == 9
    offset = resume_checks.metrics_size(part)
    assert _run(["pretrain", "--resume", part]) == 0
    # the resumed process started at step 9 (logs every 2 steps: its first row is step 10; from scratch: 2)
    assert resume_checks.first_logged_step(part, offset) == 10
    a, b = (read_checkpoint(r / "checkpoints" / "last.pt") for r in (full, part))
    if method == "moco":
        assert {"queue", "queue_ptr"} <= a["method"].keys() and int(a["method"]["queue_ptr"]) == 28 * 16 % 32
    if method == "swav":
        assert int(a["method"]["queued"]) == 32 and int(a["method"]["steps"]) == 28
    resume_checks.assert_same_training_state(a, b)  # weights (and queue), optimizer, random states, position


def test_method_flag_is_refused_on_resume_and_unknown_names_are_one_line_errors(image_folder, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("method: {name: byol}\n")
    assert _run(["pretrain", "--resume", tmp_path / "r", "--method", "moco"]) == 2
    assert "--method" in capsys.readouterr().err
    assert _run(["pretrain", "--config", "tiny", "--method", "nope", "--data", image_folder, "--run-dir",
                 tmp_path / "r2", "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # refused before any image was decoded


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_every_method_builds_and_runs_from_every_preset(preset):
    for method in method_names():
        cfg = build_config(files=[find_preset(preset)], extra={"method": {"name": method}})
        validate_pretrain(cfg)
        torch.manual_seed(0)
        m = build_method(cfg.method, lambda: build_backbone("convnet", in_channels=3, widths=[4]))
        out = m(torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8))
        assert torch.isfinite(out["loss"]) and isinstance(m.after_step(0, 10), dict), (preset, method)

"""Transfer input adaptation, the feature cache, embed, and the CLI's linear/kNN/transfer commands."""

import csv
import json
import time

import numpy as np
import pytest
import torch
import yaml

import byol.eval.feature_cache as cache_mod
from byol.cli.main import main
from byol.eval.feature_cache import features_for, file_fingerprint
from byol.eval.adapt import adapt_channels, convert_stats, plan_adaptation
from byol.models import build_backbone



def test_adapt_channels_both_ways():
    x = torch.randint(0, 256, (4, 1, 5, 6), dtype=torch.uint8)
    rgb = adapt_channels(x, 3)
    assert rgb.shape == (4, 3, 5, 6) and all(torch.equal(rgb[:, c], x[:, 0]) for c in range(3))
    y = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    y[:, 0], y[:, 1], y[:, 2] = 200, 100, 50
    grey = adapt_channels(y, 1)
    assert grey.shape == (2, 1, 2, 2) and grey.dtype == torch.uint8
    assert int(grey[0, 0, 0, 0]) == round(0.2989 * 200 + 0.587 * 100 + 0.114 * 50)
    assert adapt_channels(x, 1) is x


def test_convert_stats_and_message():
    assert convert_stats([0.3], [0.2], 3) == ([0.3] * 3, [0.2] * 3)
    m, s = convert_stats([0.5, 0.4, 0.3], [0.2, 0.2, 0.2], 1)
    assert m == [pytest.approx(0.2989 * 0.5 + 0.587 * 0.4 + 0.114 * 0.3)] and s == [pytest.approx(0.2 * 0.9999)]
    p = plan_adaptation(data_channels=1, data_size=28, encoder_channels=3, size=32, mean=[0.3], std=[0.2],
                        stats_from="the source run's")
    assert p.changes and p.channel_op == "repeat" and p.mean == (0.3, 0.3, 0.3)
    msg = p.message("fashion-mnist")
    assert "grayscale -> RGB by repeating" in msg and "resized 28 -> 32 px" in msg and "\n" not in msg
    p = plan_adaptation(data_channels=3, data_size=32, encoder_channels=1, size=None, mean=[0.3], std=[0.2],
                        stats_from="x")
    assert p.channel_op == "luma" and p.size == 32 and "luma" in p.message("cifar10")
    assert p.apply(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).shape == (2, 1, 4, 4)


def test_feature_cache_hit_on_second_call(tmp_path, monkeypatch, labeled_images):
    images, _ = labeled_images
    calls = []
    real = cache_mod.extract_features
    monkeypatch.setattr(cache_mod, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    enc = build_backbone("convnet", in_channels=1, widths=[4, 8])
    kw = dict(cache_dir=tmp_path / "f", encoder_id="abc", dataset="toy", split="train", mean=[0.3], std=[0.3])
    f1, hit1 = features_for(enc, images, size=16, **kw)
    f2, hit2 = features_for(enc, images, size=16, **kw)
    assert (hit1, hit2) == (False, True) and len(calls) == 1 and torch.equal(f1, f2)
    _, hit3 = features_for(enc, images, size=20, **kw)  # another key: extracted again
    assert not hit3 and len(calls) == 2
    _, hit4 = features_for(enc, images, size=16, **{**kw, "encoder_id": "other"})
    assert not hit4 and len(calls) == 3
    npy = sorted((tmp_path / "f").glob("toy-train-16px-*.npy"))
    assert len(npy) == 2 and json.loads(npy[0].with_suffix(".json").read_text())["key"]["dataset"] == "toy"
    for f in npy:
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="recomputing"):
        _, hit5 = features_for(enc, images, size=16, **kw)
    assert not hit5 and len(calls) == 4


def test_file_fingerprint(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 101)
    assert file_fingerprint(a) != file_fingerprint(b) and len(file_fingerprint(a)) == 64
    a.write_bytes(b"y" * 100)
    assert file_fingerprint(a) != file_fingerprint(b)


def test_cli_linear_then_knn_reuse_cached_features(tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    out = tmp_path / "out"
    started = time.perf_counter()
    assert main(["eval", "linear", "--checkpoint", str(run), "--out-dir", str(out)]) == 0
    wall = time.perf_counter() - started
    assert main(["eval", "knn", "--checkpoint", str(run), "--out-dir", str(out), "--k", "5", "20"]) == 0
    lin = json.loads((out / "linear-imgs.json").read_text())
    knn = json.loads((out / "knn-imgs.json").read_text())
    assert knn["feature_cache_hits"] == 2  # train and test features came from the linear run's extraction
    assert lin["metrics"]["top1"] > 60 and set(knn["metrics"]) == {"k5", "k20"}
    assert (lin["splits"]["train"], lin["splits"]["test"]) == (96, 24) and "held out" in lin["splits"]["test_from"]
    assert lin["encoder"]["sha256_1mb"] == file_fingerprint(run / "checkpoints" / "last.pt")
    for key in ("protocol", "dataset", "hyperparameters", "seed", "timing", "byol_version"):
        assert key in lin
    # the card's seconds: measured within the command's own wall time, the sum of its two parts (each rounded)
    timing = lin["timing"]
    assert "l2" in lin["hyperparameters"] and 0 < timing["seconds"] <= wall + 0.005
    assert abs(timing["seconds"] - timing["features_seconds"] - timing["fit_seconds"]) <= 0.011
    assert list((run / "eval" / "features").glob("*.npy"))  # the cache lives in the run dir


def test_cli_transfer_rgb_into_grayscale_encoder(tiny_run, rgb_folder, tmp_path, capsys):
    run, _, _ = tiny_run
    out = tmp_path / "out"
    rc = main(["eval", "transfer", "--checkpoint", str(run), "--to", str(rgb_folder), "--mode", "linear",
               "--out-dir", str(out), "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("transfer:")]
    assert len(lines) == 1 and "RGB -> grayscale by luma" in lines[0] and "decoded at 16 px" in lines[0]
    assert "the source run's mean/std" in lines[0]
    card = json.loads((out / "transfer-linear-rgb.json").read_text())
    assert card["protocol"] == "transfer-linear" and card["conversion"] in lines[0]
    assert card["source_dataset"].endswith("imgs")


def test_cli_transfer_grayscale_into_rgb_encoder(tiny_run, tmp_path, capsys):
    _, folder, cache = tiny_run
    out = tmp_path / "out"
    rc = main(["eval", "transfer", "--random-init", "--backbone", "convnet", "--in-channels", "3", "--to",
               str(folder), "--out-dir", str(out), "--cache-dir", str(cache), "--input-size", "20"])
    assert rc == 0
    msg = [line for line in capsys.readouterr().out.splitlines() if line.startswith("transfer:")]
    assert len(msg) == 1 and "grayscale -> RGB by repeating the channel" in msg[0]
    card = json.loads((out / "transfer-linear-imgs.json").read_text())
    assert card["encoder"]["kind"] == "random-init" and card["hyperparameters"]["size"] == 20
    npy = list((out / "features").glob("*.npy"))
    assert npy and all(np.load(f).shape[1] == 128 for f in npy)  # default convnet: 128-d


def test_cli_embed_writes_npy_and_csv(tiny_run, tmp_path):
    run, folder, _ = tiny_run
    out = tmp_path / "emb" / "emb.npy"
    assert main(["embed", "--checkpoint", str(run), "--data", str(folder), "--out", str(out)]) == 0
    feats = np.load(out)
    assert feats.shape == (120, 8) and feats.dtype == np.float32 and np.isfinite(feats).all()
    rows = list(csv.reader(open(out.with_suffix(".csv"))))
    assert rows[0] == ["index", "path", "label"] and len(rows) == 121
    assert rows[1] == ["0", "class0/000.png", "class0"] and rows[-1] == ["119", "class2/119.png", "class2"]
    assert all((folder / r[1]).is_file() for r in rows[1:])


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "linear", "--checkpoint", "/no/such/run"], "no checkpoint at /no/such/run"),
        (["eval", "knn", "--checkpoint", "RUN", "--dataset", "imagenet-21k"], "imagenet-21k does not exist"),
        (["eval", "finetune", "--checkpoint", "RUN", "--labels", "ten%"], "--labels 'ten%'"),
        (["eval", "finetune", "--checkpoint", "RUN", "--labels", "150%"], "must be in (0%, 100%]"),
        (["eval", "finetune", "--checkpoint", "RUN", "--labels", "5000"], "asks for 5000 labeled images"),
        (["eval", "transfer", "--torchvision", "resnet9000", "--to", "fashion-mnist"], "unknown torchvision model"),
        (["report", "/no/such/dir"], "is not a directory"),
    ],
)
def test_cli_user_mistakes_exit_2_with_one_line(args, message, tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    args = [str(run) if a == "RUN" else a for a in args]
    if args[0] == "eval":
        args += ["--out-dir", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_random_init_with_a_runs_architecture(tiny_run, tmp_path):
    """``--random-init RUN_DIR`` is the run's backbone (options included) with fresh weights."""
    run, folder, _ = tiny_run
    out = tmp_path / "out"
    assert main(["eval", "knn", "--random-init", str(run), "--dataset", str(folder), "--out-dir", str(out),
                 "--k", "5"]) == 0
    card = json.loads((out / "knn-imgs.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert card["encoder"]["kind"] == "random-init"
    assert card["encoder"]["backbone"]["name"] == cfg["model"]["backbone"] == "convnet"
    assert card["encoder"]["backbone"]["options"] == cfg["model"]["options"]
    # a different run architecture gives a different cache identity (no stale features reused)
    assert "widths=[4,8]" in card["encoder"]["id"]


@pytest.mark.parametrize("flags", [["--labels", "10%"], ["--lrs", "0.1"], ["--epochs", "3"], ["--steps", "10"],
                                   ["--no-baseline"], ["--weight-decays", "0"], ["--ft-batch-size", "64"],
                                   ["--val-per-class", "5"], ["--no-augment"]])
def test_cli_transfer_linear_refuses_fine_tuning_flags(flags, capsys):
    assert main(["eval", "transfer", "--random-init", "--to", "/nowhere", "--mode", "linear", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"byol: error: {flags[0]} only apply to `--mode finetune` (this is --mode linear)"


@pytest.mark.parametrize("command", [["finetune"], ["transfer", "--to", "/nowhere", "--mode", "finetune"]])
def test_cli_steps_and_epochs_together_are_refused(command, capsys):
    assert main(["eval", *command, "--random-init", "--steps", "10", "--epochs", "2"]) == 2
    assert "--steps and --epochs both set how long to fine-tune" in capsys.readouterr().err


def test_cli_l2_grid_is_refused_when_fine_tuning(capsys):
    assert main(["eval", "transfer", "--random-init", "--to", "/nowhere", "--mode", "finetune",
                 "--l2-grid", "paper"]) == 2
    assert "--l2-grid only applies to `--mode linear`" in capsys.readouterr().err


@pytest.mark.parametrize("command, given, steps, epochs", [
    (["transfer", "--to", "x", "--mode", "finetune"], [], 2000, 30.0),  # transfer's default length: 2000 steps
    (["transfer", "--to", "x", "--mode", "finetune"], ["--epochs", "3"], None, 3.0),  # not overridden by it
    (["transfer", "--to", "x", "--mode", "finetune"], ["--steps", "50"], 50, 30.0),
    (["finetune"], [], None, 30.0),
    (["finetune"], ["--steps", "50"], 50, 30.0),
])
def test_cli_fine_tuning_length(command, given, steps, epochs):
    from byol.eval.protocols.finetune import finetune_settings
    from byol.cli.main import build_parser

    settings = finetune_settings(build_parser().parse_args(["eval", *command, "--random-init", *given]))
    assert (settings.steps, settings.epochs) == (steps, epochs)
    assert settings.lrs == (0.01, 0.03, 0.1, 0.3) and settings.batch_size == 128 and settings.augment

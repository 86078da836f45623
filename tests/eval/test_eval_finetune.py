import json

import pytest
import torch
import torch.nn.functional as F

from byol.cli.main import main
from byol.errors import ConfigError
from byol.eval.finetune import FinetuneSettings, crop_flip, finetune_eval, topk_accuracy
from byol.models import build_backbone


def test_crop_flip_windows_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 2, 6, 7), generator=g, dtype=torch.uint8)
    out = crop_flip(x, 2, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(16):
        cands = [padded[i, :, dy : dy + 6, dx : dx + 7] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], c) for c in cands)
        flipped = any(torch.equal(out[i], c.flip(-1)) for c in cands)
        assert plain or flipped
        flips += flipped and not plain
    assert 0 < flips < 16  # both flipped and unflipped samples occur
    assert torch.equal(crop_flip(x, 0, torch.Generator().manual_seed(1)).float().mean((1, 2, 3)),
                       x.float().mean((1, 2, 3)))  # pad 0: only flips, pixel sums unchanged


def test_topk_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0, 0, 0], [0, 1.0, 2.0, 3.0, 0, 0]])
    acc = topk_accuracy(logits, torch.tensor([1, 3]))
    assert acc == {"top1": 50.0, "top5": 100.0}
    assert topk_accuracy(logits[:, :3], torch.tensor([1, 0])) == {"top1": 0.0}


def test_settings_validation():
    with pytest.raises(ConfigError):
        FinetuneSettings(lrs=(0.0,)).validate()
    with pytest.raises(ConfigError):
        FinetuneSettings(batch_size=1).validate()
    assert FinetuneSettings(epochs=3, batch_size=8).total_steps(20) == 6  # 2 full batches per epoch
    assert FinetuneSettings(steps=5).total_steps(1000) == 5


def test_finetune_function_learns_and_does_not_touch_the_encoder(labeled_images):
    images, labels = labeled_images
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    tr, va, te = perm[:45], perm[45:75], perm[75:]
    enc = build_backbone("convnet", in_channels=1, widths=[4, 8])
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res = finetune_eval(enc, (images[tr], labels[tr]), (images[va], labels[va]), (images[te], labels[te]),
                        num_classes=3, size=16, mean=[0.3], std=[0.3],
                        settings=FinetuneSettings(lrs=(0.03, 0.1), epochs=30, batch_size=16), seed=0)
    assert res["top1"] > 70  # chance is 33%
    assert res["lr"] in (0.03, 0.1) and set(res["val_top1_by_setting"]) == {"lr=0.03,wd=0", "lr=0.1,wd=0"}
    assert res["n_train"] == 45 and res["n_test"] == 45 and res["steps"] == 30 * (45 // 16)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # fine-tuned a copy


def test_lr_choice_does_not_read_test_labels(labeled_images):
    """The learning rate is chosen on the validation split: permuting the test labels must leave the
    choice (and every validation score) unchanged while the test accuracy moves."""
    images, labels = labeled_images
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    tr, va, te = perm[:45], perm[45:75], perm[75:]
    torch.manual_seed(0)
    enc = build_backbone("convnet", in_channels=1, widths=[4, 8])
    kw = dict(num_classes=3, size=16, mean=[0.3], std=[0.3], seed=0,
              settings=FinetuneSettings(lrs=(0.01, 0.1, 1.0), steps=12, batch_size=16))
    base = finetune_eval(enc, (images[tr], labels[tr]), (images[va], labels[va]), (images[te], labels[te]), **kw)
    moved = False
    for p in range(3):
        shuffled = labels[te][torch.randperm(45, generator=torch.Generator().manual_seed(p))]
        res = finetune_eval(enc, (images[tr], labels[tr]), (images[va], labels[va]), (images[te], shuffled), **kw)
        assert res["lr"] == base["lr"] and res["val_top1_by_setting"] == base["val_top1_by_setting"]
        moved |= res["top1"] != base["top1"]
    assert moved  # the permutations do change the test score: the check above is not vacuous


def test_scratch_baseline_is_a_fresh_init_and_the_pretrained_encoder_is_not_modified(tiny_run, tmp_path,
                                                                                      monkeypatch):
    """What fine-tuning starts from, recorded at every training run: the checkpoint's weights for the
    BYOL encoder; for the baseline, the run's architecture freshly initialised with torch seed
    ``seed + 1`` (EncoderSource.make_scratch), which differs from the checkpoint. Afterwards the
    prepared encoder still holds the checkpoint's weights (every run trained a copy)."""
    import byol.eval.finetune as finetune
    from byol.eval.context import prepare
    from byol.eval.protocols import run_finetune
    from byol.eval.encoders import SourceSpec
    from byol.eval.subsets import parse_labels
    from byol.models.factory import build_encoder
    from byol.run.files import load_encoder
    from byol.train.config import load_run_config

    run, _, _ = tiny_run
    starts = []
    real = finetune.train_classifier

    def spy(encoder, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in encoder.state_dict().items()})
        return real(encoder, *args, **kwargs)

    monkeypatch.setattr(finetune, "train_classifier", spy)
    seed = 3
    ctx = prepare(SourceSpec(checkpoint=run), out_dir=tmp_path, feature_cache=False, seed=seed)
    pretrained = load_encoder(run)[0].state_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        fresh = build_encoder(load_run_config(run).model, ctx.source.in_channels).state_dict()

    def differing(a, b):  # names of the tensors that differ (all of them if the architectures differ)
        return sorted(a.keys() ^ b.keys()) or [k for k in a if not torch.equal(a[k], b[k])]

    [out] = run_finetune(ctx, [parse_labels("30")], FinetuneSettings(lrs=(0.1,), steps=3, batch_size=8))
    assert len(starts) == 2  # one grid point, no refit: the BYOL encoder, then the baseline
    assert differing(starts[0], pretrained) == []
    assert differing(starts[1], fresh) == []  # same architecture (keys and shapes), fresh weights
    weights = [k for k, v in pretrained.items() if v.dtype.is_floating_point and v.ndim > 1]
    assert weights and set(weights) <= set(differing(starts[1], pretrained))
    assert differing(ctx.source.encoder.state_dict(), pretrained) == []
    assert out.card["baseline"]["name"] == "scratch" and out.card["encoder"]["kind"] == "checkpoint"


def test_cli_finetune_with_scratch_baseline(tiny_run, tmp_path, capsys):
    run, folder, cache = tiny_run
    out = tmp_path / "out"
    rc = main(["eval", "finetune", "--checkpoint", str(run), "--labels", "30", "10%", "--lrs", "0.05", "0.1",
               "--epochs", "25", "--out-dir", str(out), "--no-cache"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "supervised from scratch" in text and "held out 20% of train" in text
    card = json.loads((out / "finetune-imgs-30.json").read_text())
    assert card["protocol"] == "finetune" and card["hyperparameters"]["labels"] == "30"
    assert card["metrics"]["top1"] > 60  # 3 classes: chance is 33%
    # the scratch network learns these 3 classes from 30 labels too (100% here): a baseline that trained
    # nothing (or a constant prediction) scores chance, 33% of the 24 balanced test images
    assert card["baseline"]["name"] == "scratch" and card["baseline"]["metrics"]["top1"] > 60
    assert card["splits"]["labeled"] == 30 and card["splits"]["test"] == 24
    assert card["hyperparameters"]["lr"] in (0.05, 0.1) and card["encoder"]["kind"] == "checkpoint"
    sub = json.loads(open(card["label_subset"]).read())
    labeled, val, test = set(sub["labeled"]), set(sub["val"]), set(sub["test"])
    assert len(labeled) == 30 and len(test) == 24 and len(val) == 30
    assert not (labeled & val) and not (labeled & test) and not (val & test)
    assert max(labeled | val | test) < 120
    # labels are balanced per class (class folders are sorted: 40 images each, in order)
    assert sorted(sum(1 for i in labeled if i // 40 == c) for c in range(3)) == [10, 10, 10]
    assert (out / "finetune-imgs-10pct.json").is_file()

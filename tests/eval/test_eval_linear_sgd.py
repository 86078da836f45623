"""SGD linear protocol (the paper's ImageNet linear evaluation) on a frozen encoder."""

import json

import pytest
import torch
from torch import nn

from byol.augment import eval_transform
from byol.cli.main import main
from byol.errors import ConfigError, DataError
from byol.eval import LinearSGDSettings, linear_sgd_eval, train_linear_heads

MEAN, STD = [0.4] * 3, [0.3] * 3


def color_images(n_per_class: int, k: int = 3, size: int = 8, seed: int = 0):
    """RGB images whose class is its set of bright channels (class c < 3: channel c; c >= 3: channels
    c % 3 and (c + 1) % 3). Every crop or flip keeps it; the classes are vertices of a cube in mean
    colour, hence linearly separable."""
    assert k <= 6
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(10, 60, (k * n_per_class, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(k).repeat_interleave(n_per_class)
    for c in range(k):
        x[y == c, c % 3] += 150
        if c >= 3:
            x[y == c, (c + 1) % 3] += 150
    return x, y


def identity_like_encoder() -> nn.Module:
    """[x, -x] per channel -> BatchNorm (non-trivial running stats) -> ReLU -> average pool: 6 features."""
    conv = nn.Conv2d(3, 6, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([torch.eye(3), -torch.eye(3)]).view(6, 3, 1, 1))
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, 0.4, 0.3, -0.5, -0.4, -0.3]))
        bn.running_var.fill_(0.5)
        bn.weight.fill_(2.0)
    return nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Collapsed(nn.Module):
    """Constant output whatever the input (a collapsed representation)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.register_buffer("value", torch.linspace(-1, 3, dim))

    def forward(self, x):
        return self.value.expand(x.shape[0], -1).clone()


class Spy(nn.Module):
    """Wraps an encoder; records every input batch."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.inputs = inner, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.inner(x)


FAST = dict(epochs=8, batch_size=16, stats_samples=64)


def test_settings_validation_view_spec_and_steps():
    for bad in (dict(lrs=()), dict(lrs=(0.1, -1.0)), dict(lrs=(0.1, 0.1)), dict(epochs=0), dict(batch_size=0),
                dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.9, 0.5)), dict(val_fraction=1.0),
                dict(momentum=1.0)):
        with pytest.raises(ConfigError):
            LinearSGDSettings(**bad).validate()
    spec = LinearSGDSettings(crop_scale=(0.3, 1.0)).view_spec()
    assert spec.crop_scale == (0.3, 1.0) and spec.flip_p == 0.5
    assert spec.jitter_p == spec.gray_p == spec.blur_p == spec.solarize_p == 0.0
    s = LinearSGDSettings(epochs=3, batch_size=8)
    assert s.total_steps(20) == 6  # 2 full batches per epoch, the short one dropped
    assert s.effective_lr(0.4, 1000) == pytest.approx(0.4 * 8 / 256)
    assert s.effective_lr(0.4, 4) == pytest.approx(0.4 * 4 / 256)  # batch capped at the data size


def test_separable_images_reach_100_percent_without_touching_the_encoder():
    xtr, ytr = color_images(24, k=6)
    xte, yte = color_images(10, k=6, seed=1)
    enc = identity_like_encoder()
    enc.train()  # the protocol must switch BN to eval mode itself, and restore this flag
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res = linear_sgd_eval(enc, (xtr, ytr), (xte, yte), size=8, mean=MEAN, std=STD,
                          settings=LinearSGDSettings(lrs=(0.4, 0.1), **FAST), seed=0)
    assert res["top1"] == 100.0 and res["top5"] == 100.0
    assert res["num_classes"] == 6 and res["dim"] == 6 and res["n_test"] == 60
    # frozen: parameters and BN running statistics identical, no gradient, training flags restored
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "encoder state changed"
    assert all(p.grad is None for p in enc.parameters())
    assert all(m.training for m in enc.modules())


def test_lr_is_chosen_from_the_grid_on_validation_then_refit():
    xtr, ytr = color_images(20)
    xte, yte = color_images(6, seed=1)
    grid = (0.05, 3.0, 0.4)
    res = linear_sgd_eval(identity_like_encoder(), (xtr, ytr), (xte, yte), size=8, mean=MEAN, std=STD,
                          settings=LinearSGDSettings(lrs=grid, **FAST), seed=3)
    assert list(res["val_top1_by_lr"]) == list(grid)
    assert res["lr"] in grid
    best = max(res["val_top1_by_lr"].values())
    assert res["lr"] == next(lr for lr in grid if res["val_top1_by_lr"][lr] == best)  # first of the best
    assert res["n_val"] == 6 and res["n_fit"] == 60 and res["refit"]  # 10% of 60, stratified; refit on all
    assert res["steps"] == 8 * (60 // 16)
    assert res["lr_effective"] == pytest.approx(res["lr"] * 16 / 256)
    one = linear_sgd_eval(identity_like_encoder(), (xtr, ytr), (xte, yte), size=8, mean=MEAN, std=STD,
                          settings=LinearSGDSettings(lrs=(0.2,), **FAST))
    assert one["lr"] == 0.2 and one["n_val"] == 0 and one["val_top1_by_lr"] == {} and not one["refit"]


def test_lr_choice_does_not_read_test_labels():
    """The learning rate is chosen on a validation split of train: permuting the test labels must leave
    the choice (and every validation score) unchanged while the test accuracy moves."""

    def weak(n, seed):  # class c: channel c brighter by 10 under uniform 0-199 noise (~60% separable)
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 200, (3 * n, 3, 8, 8), generator=g, dtype=torch.uint8)
        y = torch.arange(3).repeat_interleave(n)
        for c in range(3):
            x[y == c, c] += 10
        return x, y

    (xtr, ytr), (xte, yte) = weak(30, 0), weak(20, 1)
    s = LinearSGDSettings(lrs=(10.0, 0.1, 0.001), epochs=4, batch_size=16, stats_samples=64, val_fraction=0.3)
    kw = dict(size=8, mean=MEAN, std=STD, settings=s, seed=0)
    base = linear_sgd_eval(identity_like_encoder(), (xtr, ytr), (xte, yte), **kw)
    moved = False
    for p in range(3):
        perm = torch.randperm(len(yte), generator=torch.Generator().manual_seed(p))
        res = linear_sgd_eval(identity_like_encoder(), (xtr, ytr), (xte, yte[perm]), **kw)
        assert res["lr"] == base["lr"] and res["val_top1_by_lr"] == base["val_top1_by_lr"]
        moved |= res["top1"] != base["top1"]
    assert moved  # the permutations do change the test score: the check above is not vacuous


def test_collapsed_encoder_gives_chance_accuracy():
    xtr, ytr = color_images(10, k=6)
    xte, yte = color_images(5, k=6, seed=1)  # balanced: any constant prediction is right on 1/6
    res = linear_sgd_eval(Collapsed(), (xtr, ytr), (xte, yte), size=8, mean=MEAN, std=STD,
                          settings=LinearSGDSettings(lrs=(0.4, 0.1), **FAST))
    assert res["top1"] == pytest.approx(100 / 6) and res["top5"] == pytest.approx(500 / 6)


def test_encoder_runs_once_per_step_for_the_whole_grid():
    xtr, ytr = color_images(16)  # 48 images
    spy = Spy(identity_like_encoder())
    s = LinearSGDSettings(lrs=(0.4, 0.2, 0.1, 0.05), epochs=2, batch_size=8, stats_samples=20, refit=False)
    heads = train_linear_heads(spy, xtr, ytr, num_classes=3, size=8, mean=MEAN, std=STD, settings=s)
    assert heads.weight.shape == (4, 3, 6) and heads.steps == 2 * (48 // 8)
    sizes = [x.shape[0] for x in spy.inputs]
    assert sizes == [20] + [8] * heads.steps  # statistics pass, then ONE forward per step for 4 layers
    assert all(len(ls) == heads.steps for ls in heads.losses)


@pytest.mark.parametrize("augment", [True, False])
def test_training_views_are_crop_flip_augmented_and_eval_views_are_not(augment):
    g = torch.Generator().manual_seed(0)
    xtr = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    ytr = torch.arange(2).repeat(8)
    spy = Spy(identity_like_encoder())
    s = LinearSGDSettings(lrs=(0.1,), epochs=1, batch_size=8, stats_samples=16, augment=augment)
    linear_sgd_eval(spy, (xtr, ytr), (xtr[:4], ytr[:4]), size=8, mean=MEAN, std=STD, settings=s)
    plain = eval_transform(xtr, 8, MEAN, STD).flatten(1)
    train_rows = torch.cat(spy.inputs[1:3]).flatten(1)  # after the statistics pass: the 2 training steps
    match = (torch.cdist(train_rows, plain) < 1e-4).any(1)
    assert bool(match.all()) != augment  # augmented: no training input is an un-augmented image
    test_rows = spy.inputs[-1].flatten(1)  # the test pass sees the un-augmented images
    assert torch.allclose(test_rows, plain[:4], atol=1e-5)


def test_input_errors():
    x, y = color_images(4)
    kw = dict(size=8, mean=MEAN, std=STD, settings=LinearSGDSettings(lrs=(0.1,), epochs=1, batch_size=4))
    with pytest.raises(DataError, match="uint8"):
        linear_sgd_eval(identity_like_encoder(), (x.float(), y), (x, y), **kw)
    with pytest.raises(DataError, match="labels"):
        linear_sgd_eval(identity_like_encoder(), (x, y[:-1]), (x, y), **kw)
    with pytest.raises(DataError, match="num_classes"):
        linear_sgd_eval(identity_like_encoder(), (x, y), (x, y), num_classes=2, **kw)


def test_cli_sgd_protocol_writes_a_card_and_keeps_the_lbfgs_one(tiny_run, tmp_path, capsys):
    run, folder, cache = tiny_run
    out = tmp_path / "out"
    rc = main(["eval", "linear", "--checkpoint", str(run), "--protocol", "sgd", "--epochs", "4",
               "--sgd-batch-size", "16", "--lrs", "0.1", "0.4", "--crop-scale", "0.5", "1", "--out-dir", str(out),
               "--no-cache"])
    assert rc == 0
    cap = capsys.readouterr()
    assert "base lr 0.1: val top-1" in cap.out and "base lr 0.4: val top-1" in cap.out
    assert "linear-sgd" in cap.err  # the progress bar
    card = json.loads((out / "linear-sgd-imgs.json").read_text())
    hp = card["hyperparameters"]
    assert card["protocol"] == "linear-sgd" and card["encoder"]["kind"] == "checkpoint"
    assert hp["lr"] in (0.1, 0.4) and hp["lr_grid"] == [0.1, 0.4] and set(hp["val_top1_by_lr"]) == {"0.1", "0.4"}
    assert hp["lr"] == max(hp["lr_grid"], key=lambda v: hp["val_top1_by_lr"][f"{v:g}"])
    assert hp["epochs"] == 4 and hp["batch_size"] == 16 and hp["steps"] == 4 * (96 // 16)
    assert hp["augment"].startswith("random resized crop (area 0.5-1)") and hp["bn"].startswith("eval mode")
    assert card["splits"]["train"] == 96 and card["splits"]["test"] == 24 and card["splits"]["val"] == 9
    # 3 balanced classes: a probe that fits nothing scores 33%; 4 epochs of SGD on these features score 92% here
    assert card["metrics"]["top1"] > 60 and "top5" not in card["metrics"]  # 3 classes: no top-5
    assert main(["eval", "linear", "--checkpoint", str(run), "--out-dir", str(out), "--no-cache"]) == 0
    assert json.loads((out / "linear-imgs.json").read_text())["protocol"] == "linear"
    assert (out / "linear-sgd-imgs.json").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--protocol", "sgd", "--lrs", "0.1", "0"], "learning rates must be positive"),
        (["--protocol", "sgd", "--crop-scale", "0", "1"], "crop scale must satisfy"),
        (["--protocol", "sgd", "--epochs", "0"], "epochs must be positive"),
        (["--protocol", "sgd", "--l2-grid", "paper"], "--l2-grid only applies to --protocol lbfgs"),
        (["--epochs", "5", "--lrs", "0.1"], "--epochs, --lrs only apply to `--protocol sgd`"),
    ],
)
def test_cli_sgd_mistakes_exit_2_with_one_line(extra, message, tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    assert main(["eval", "linear", "--checkpoint", str(run), "--out-dir", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err

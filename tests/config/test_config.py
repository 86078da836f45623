"""The config is checked when it is loaded: every mistake is one ConfigError with a one-line message that
names the key, raised by ``build_config`` before any data is read; parsed values are there for their users."""

from __future__ import annotations

import subprocess
import sys

import pytest

from byol.config import TrainConfig, check_batch, find_preset
from byol.train.config import PretrainConfig, build_config
from byol.errors import ConfigError
from byol.config.views import ViewSpec, paper_views


def _load(*overrides: str) -> PretrainConfig:
    return build_config(files=[find_preset("tiny")], overrides=list(overrides))


def _error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        _load(*overrides)
    message = str(e.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "override, names",
    [
        ("train.budget=abc", "train.budget"),
        ("train.budget=0s", "train.budget"),
        ("views.view2.blur_prob=0.5", "views.view2.blur_prob"),  # a key ViewSpec does not have
        ("views.view1.blur_p=2", "views.view1.blur_p"),  # a probability above 1
        ("views.both.crop_scale=[0.5, 0.2]", "views.both.crop_scale"),  # lo > hi
        ("views.view1.interpolation=lanczos", "views.view1.interpolation"),
        ("views.view2.brightness=1.5", "views.view2"),  # valid alone, not with the additive brightness_mode
        ("optim.batch_size=0", "optim.batch_size"),
        ("optim.accum_steps=0", "optim.accum_steps"),
        ("optim.batch_size=15", "optim.batch_size"),  # with accum_steps 2 below: not divisible
        ("train.budget_pace_window=0", "train.budget_pace_window"),
        ("optim.base_lr=-0.1", "optim.base_lr"),
        ("optim.base_lr=.nan", "optim.base_lr"),  # YAML's NaN: finite numbers only
        ("optim.weight_decay=-1e-6", "optim.weight_decay"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
        ("method.proj_dim=0", "method.proj_dim"),
        ("method.temperature=0", "method.temperature"),
        ("method.tau_schedule=cosin", "method.tau_schedule"),
        ("train.knn_k=0", "train.knn_k"),
        ("train.ckpt_minutes=0", "train.ckpt_minutes"),
        ("data.image_size=-32", "data.image_size"),
    ],
)
def test_a_bad_value_fails_at_load_with_one_line_naming_the_key(override, names):
    message = _error("optim.accum_steps=2", override)
    assert message.startswith(names) or f"'{names}'" in message, message


@pytest.mark.parametrize("override, suggestion", [
    ("optim.base_lrr=0.1", "did you mean 'optim.base_lr'?"),
    ("optm.base_lr=0.1", "did you mean 'optim'?"),
    ("train.bugdet=10m", "did you mean 'train.budget'?"),
    ("method.tau_schedule=cosin", "did you mean 'cosine'?"),
])
def test_a_mistyped_key_or_choice_gets_a_did_you_mean(override, suggestion):
    assert suggestion in _error(override)


def test_a_bad_batch_says_how_to_fix_it():
    message = _error("optim.batch_size=15", "optim.accum_steps=2")
    assert "optim.accum_steps" in message and "multiple of 2, e.g. 14 or 16" in message


def test_a_good_view_override_merges_both_then_each_view():
    cfg = _load("views.both.hue=0.2", "views.view2.hue=0.3", "views.view1.crop_scale=[0.2, 1]")
    t, t_prime = cfg.views.specs
    paper_t, paper_t_prime = paper_views()
    assert t == paper_t.replace(hue=0.2, crop_scale=(0.2, 1.0), blur_p=0.0)  # tiny sets views.both.blur_p: 0
    assert t_prime == paper_t_prime.replace(hue=0.3, blur_p=0.0)
    assert isinstance(t.crop_scale, tuple)


@pytest.mark.parametrize("text, seconds", [(None, None), ("90", 90.0), ("10m", 600.0), ("1h30m", 5400.0)])
def test_budget_seconds_is_the_parsed_budget(text, seconds):
    assert TrainConfig(budget=text).budget_seconds == seconds


@pytest.mark.parametrize(
    "args, message",
    [
        ((8, 1, 1, None), None),
        ((12, 2, 3, 12), None),
        ((0, 1, 1, None), "optim.batch_size must be a positive number of images, got 0"),
        ((-4, 1, 1, None), "optim.batch_size must be a positive number of images"),
        ((8, 0, 1, None), "optim.accum_steps must be a positive number"),
        ((10, 4, 1, None), "optim.batch_size (10) must be divisible by optim.accum_steps (4)"),
        ((12, 2, 4, None), "optim.accum_steps x 4 processes (8): set optim.batch_size to a multiple of 8, e.g. 8 or 16"),
        ((3, 4, 1, None), "e.g. 4"),
        ((16, 2, 1, 10), "optim.batch_size (16) is more than the 10 training images: lower optim.batch_size to 10 or less"),
        ((16, 4, 1, 3), "use more images"),
        ((16, 4, 1, 7), "use more images or fewer micro-batches"),  # batch 4 would leave 1 image a pass
        ((4, 4, 1, None), "leaves 1 image per forward pass, and BatchNorm needs at least 2"),
        ((8, 2, 4, None), "over 8 micro-batches leaves 1 image"),
    ],
)
def test_check_batch(args, message):
    if message is None:
        check_batch(*args)
        return
    with pytest.raises(ConfigError) as e:
        check_batch(*args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_trainer_uses_the_same_batch_check():
    """No other batch check: the trainer's is check_batch's, as a ConfigError (a library user's Trainer
    gets the same one-line message as a config)."""
    import torch

    from byol.config import OptimConfig, TrainConfig
    from byol.data.batches import CachedImages
    from byol.train.loop import LoopOptions, Trainer

    options = LoopOptions.from_config(TrainConfig(epochs=1), OptimConfig(batch_size=15, accum_steps=2), evaluate_every=0)
    with pytest.raises(ConfigError, match=r"^optim.batch_size \(15\) must be divisible by optim.accum_steps \(2\)"):
        Trainer(torch.nn.Linear(1, 1), None, None, CachedImages(torch.zeros(64, 1, 4, 4, dtype=torch.uint8)), batch_size=15,
                device=torch.device("cpu"), options=options)


def test_the_process_count_enters_the_batch_check():
    with pytest.raises(ConfigError, match=r"optim.accum_steps x 3 processes \(6\)"):
        check_batch(16, 2, world_size=3)


def test_a_view_spec_and_the_config_share_one_check_per_field():
    with pytest.raises(ConfigError, match=r"^flip_p must be a probability in \[0, 1\], got 1.5$"):
        ViewSpec(flip_p=1.5)
    assert _error("views.view1.flip_p=1.5") == "views.view1.flip_p must be a probability in [0, 1], got 1.5"


def test_config_does_not_import_torch():
    code = "import sys, byol.config; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_cli_reports_a_config_error_before_touching_the_data(tmp_path, capsys, monkeypatch):
    import byol.train.pretrain
    from byol.cli import main

    def no_run(*args, **kwargs):
        raise AssertionError("a run started although the config is bad")

    monkeypatch.setattr(byol.train.pretrain, "run_pretrain", no_run)
    missing = tmp_path / "no-such-data"  # were the data read first, the error would name this path
    code = main(["pretrain", "--config", "tiny", "--set", "train.budget=abc", "--data", str(missing),
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("byol: error: train.budget: bad duration 'abc'") and err.count("\n") == 1, err
    assert "Traceback" not in err and str(missing) not in err
    assert not (tmp_path / "run").exists()


def test_fewer_images_than_one_batch_is_the_same_config_error(tmp_path):
    import numpy as np
    from PIL import Image

    from byol.train.pretrain import build_pretrain

    folder = tmp_path / "five"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = build_config(files=[find_preset("tiny")],
                       extra={"data": {"source": str(folder), "cache_dir": str(tmp_path / "cache")}})
    with pytest.raises(ConfigError, match=r"^optim.batch_size \(16\) is more than the 5 training images: lower "
                                          r"optim.batch_size to 5 or less$"):
        build_pretrain(cfg, None)


def test_one_checker_reads_the_ranges_and_choices_that_fields_declare():
    import dataclasses
    from dataclasses import dataclass

    from byol.config.checks import Section, check_section, choice, ranged

    @dataclass
    class Probe(Section):
        SECTION = "probe"
        rate: float = ranged(0.5, 0, 1, low_ok=True)
        count: int | None = ranged(None)
        mode: str = choice("fast", "fast", "slow")

    Probe(rate=0.0, count=None)  # the closed low end and None are fine
    for kwargs, message in (({"rate": 1.5}, "probe.rate must be in [0, 1], got 1.5"),
                            ({"count": 0}, "probe.count must be positive, got 0"),
                            ({"mode": "slw"}, "probe.mode must be one of fast, slow, got 'slw' (did you mean 'slow'?)")):
        with pytest.raises(ConfigError) as e:
            Probe(**kwargs)
        assert str(e.value) == message
    p = Probe()
    p.rate = -1.0  # changed after it was built: the checker run again (validate_pretrain does) finds it
    with pytest.raises(ConfigError, match=r"^section.rate must be in \[0, 1\]"):
        check_section(p, "section")
    # every section of the run's config declares its checks the same way (none is left in a side table)
    assert dataclasses.fields(TrainConfig)[0].metadata["range"] == (0, float("inf"), False)


def test_a_config_changed_in_code_is_checked_again_before_a_run():
    from byol.train.config import validate_pretrain

    cfg = _load()
    cfg.method.tau_base = 2.0
    with pytest.raises(ConfigError, match=r"^method.tau_base must be in \[0, 1\], got 2.0$"):
        validate_pretrain(cfg)


def test_a_config_file_that_is_not_utf8_is_one_line_naming_the_file_and_byte(tmp_path, capsys):
    from byol.cli import main

    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: caf\u00e9 au lait\noptim: {base_lr: 0.1}\n".encode("latin-1"))  # 0xe9 at byte 16
    with pytest.raises(ConfigError) as e:
        build_config(files=[path])
    assert str(e.value) == f"{path}: not a UTF-8 text file (byte 16); save it as UTF-8"
    assert main(["pretrain", "--config", str(path), "--data", "nowhere"]) == 2  # before any data is read
    assert capsys.readouterr().err.strip().splitlines() == [f"byol: error: {e.value}"]


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("5E3", 5000.0), ("2e-1", 0.2), ("+3e+0", 3.0)])
def test_exponent_notation_without_a_point_is_a_number(text, value):
    """YAML 1.1 reads 1e-4 as a string (it wants 1.0e-4); a float key takes it as the number a user means,
    from --set and from a config file alike, and anything else that is not a number is still refused."""
    from byol.config import find_preset
    from byol.train.config import build_config

    cfg = build_config(files=[find_preset("tiny")], overrides=[f"optim.weight_decay={text}"])
    assert cfg.optim.weight_decay == value
    cfg = build_config(files=[find_preset("tiny")], extra={"optim": {"base_lr": text}})
    assert cfg.optim.base_lr == value
    with pytest.raises(ConfigError, match="expected a number"):
        build_config(files=[find_preset("tiny")], overrides=[f"optim.weight_decay={text}x"])
    with pytest.raises(ConfigError, match="expected an integer"):  # ints keep their own rule
        build_config(files=[find_preset("tiny")], overrides=[f"optim.batch_size={text}"])


@pytest.mark.parametrize("num_images, split, fit",
                         [(40, 1, 40), (40, 16, 32), (40, 32, 0), (7, 4, 0), (8, 4, 8), (1, 1, 0)])
def test_fitting_batch_is_the_largest_batch_check_batch_accepts(num_images, split, fit):
    from byol.config import fitting_batch

    assert fitting_batch(num_images, split) == fit
    if fit:
        check_batch(fit, split, 1, num_images)  # accepted
    accepted = [b for b in range(1, num_images + 1) if b % split == 0 and b // split >= 2]
    assert fit == max(accepted, default=0)

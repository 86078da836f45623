"""Fair method comparisons in ``byol reproduce``: each method on its own preset (recipe), MoCo v2's one view
distribution, equal wall time beside equal steps (baselines) and equal steps beside equal epochs (batch size)."""

import json

import pytest
import yaml

from byol.cli import main
from byol.config import find_preset
from byol.reproduce import Cell, Scale, study_for
from byol.reproduce.recipes import available
from byol.reproduce.runner import cell_config

SMOKE = ["--config", "tiny", "--epochs", "1", "--seeds", "0", "--eval-train", "0"]


def _run(folder, tmp_path, name, *extra):
    out = tmp_path / "out"
    args = ["reproduce", name, *SMOKE, "--data", str(folder), "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
            "--set", f"data.cache_dir={tmp_path / 'cache'}", *extra]
    return main(args), out


def _records(out):
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]


def _preset(name):
    return yaml.safe_load(find_preset(name).read_text())


def test_moco_v2_preset_draws_both_views_from_one_distribution():
    from byol.train.config import build_config

    v1, v2 = build_config(files=[find_preset("moco-cifar10")]).views.specs
    assert v1 == v2  # MoCo v2's aug+ for query and key
    assert (v1.blur_p, v1.solarize_p, v1.gray_p, v1.jitter_p) == (0.5, 0.0, 0.2, 0.8)
    assert (v1.brightness, v1.contrast, v1.saturation, v1.hue) == (0.4, 0.4, 0.4, 0.1)
    assert v1.crop_scale == (0.2, 1.0)
    b1, b2 = build_config(files=[find_preset("cifar10")]).views.specs
    assert b1 != b2  # BYOL's preset keeps the asymmetric T / T'


def test_a_recipe_cell_takes_its_presets_method_and_optimizer_and_the_scales_data_model_and_batch(split_folder):
    scale = Scale("tiny", data=str(split_folder), budget=None, epochs=1.0)
    cells = {c.key: c for c in study_for("baselines", scale).cells}
    tiny = _preset("tiny")
    for key, recipe in (("simclr", "simclr-cifar10"), ("moco", "moco-cifar10"), ("simsiam", "simsiam-cifar10"),
                        ("barlowtwins", "barlowtwins-cifar10")):
        cfg, own = cell_config(cells[key], scale, 0), _preset(recipe)
        assert cells[key].recipe == recipe and cfg.method.name == key
        for k, v in own["method"].items():
            assert getattr(cfg.method, k) == v, (key, k)
        for k, v in own["optim"].items():
            if k != "batch_size":
                assert getattr(cfg.optim, k) == v, (key, k)
        assert cfg.optim.batch_size == tiny["optim"]["batch_size"] == 16  # the scale's batch: equal steps
        assert cfg.model.options == tiny["model"]["options"] and cfg.data.knn_bank == tiny["data"]["knn_bank"]
        assert cfg.data.source == str(split_folder) and cfg.train.epochs == 1.0
        views = cfg.views.specs
        assert (views[0] == views[1]) is (key == "moco"), key  # only MoCo v2 brings its own (symmetric) views
    byol = cell_config(cells["byol"], scale, 0)  # BYOL's recipe is the scale preset itself
    assert (byol.optim.name, byol.optim.base_lr, byol.method.proj_hidden) == ("lars", 0.5, 32)


def test_a_cell_whose_method_or_preset_is_missing_is_skipped_with_one_line():
    lines = []
    cells = (Cell("byol", "BYOL", "byol"), Cell("nope", "Nope", "nope-method"),
             Cell("moco", "MoCo", "moco", recipe="no-such-preset"))
    assert [c.key for c in available(cells, lines.append)] == ["byol"]
    assert lines == ["Nope: skipped (method 'nope-method' is not in this version)",
                     "MoCo: skipped (preset 'no-such-preset' is not in this version)"]
    assert any(c.method == "swav" and c.recipe == "swav-cifar10" for c in study_for("baselines", Scale("tiny")).cells)


def test_the_fairness_options_are_checked_in_one_line(capsys):
    assert main(["reproduce", "baselines", "--equal-time"]) == 2
    assert "--equal-time needs --epochs" in capsys.readouterr().err
    assert main(["reproduce", "tau", "--epochs", "1", "--equal-time"]) == 2
    assert "--equal-time applies to the baselines study" in capsys.readouterr().err
    assert main(["reproduce", "baselines", "--epochs", "1", "--equal-steps"]) == 2
    assert "--equal-steps applies to the batch-size study" in capsys.readouterr().err


@pytest.mark.slow
def test_equal_time_cells_train_for_the_seconds_of_byols_cell(split_folder, tmp_path):
    # 4 epochs (24 steps) and small heads, so that each method fits the 8 steps a budget needs to measure its
    # pace in BYOL's few seconds (the recipes' 1024-wide heads cost several times tiny's whole step)
    rc, out = _run(split_folder, tmp_path, "baselines", "--equal-time", "--epochs", "4",
                   "--set", "method.proj_hidden=32", "--set", "method.proj_dim=16")
    assert rc == 0
    records = _records(out)
    byol = [r for r in records if r["method"] == "byol"]
    timed = [r for r in records if r.get("budget")]
    steps = [r for r in records if r["method"] != "byol" and not r.get("budget")]
    assert len(byol) == 1 and len(timed) == len(steps) == len(available(study_for("baselines", Scale("tiny")).cells,
                                                                        lambda _: None)) - 1
    seconds = round(byol[0]["pretrain_seconds"], 1)
    for r in timed:
        train = r["provenance"]["config"]["train"]
        assert train["budget"] == r["budget"] and float(train["budget"].rstrip("s")) == pytest.approx(seconds)
        assert train["epochs"] == 40.0  # an upper bound (10 x the scale's): the budget decides
    for r in steps:  # the equal-steps cells: BYOL's steps, each on its own recipe
        assert r["steps"] == byol[0]["steps"] and r["provenance"]["config"]["train"]["budget"] is None
    moco = next(r for r in records if r["method"] == "moco")
    views = moco["provenance"]["config"]["views"]
    assert moco["recipe"] == "moco-cifar10" and views["both"]["blur_p"] == 0.5 and not views.get("view1")
    md = (out / "baselines.md").read_text()
    assert "## At equal wall time" in md and "depends on the host" in md and "| SimCLR, BYOL's wall time |" in md
    assert "each method runs its own preset's loss and optimizer settings" in md
    assert "| claim | linear, equal steps | kNN, equal steps | linear, equal wall time | kNN, equal wall time |" in md
    assert "not run yet" not in md and "not measured yet" not in md


@pytest.mark.slow
def test_equal_steps_gives_every_batch_the_steps_of_the_largest(split_folder, tmp_path):
    rc, out = _run(split_folder, tmp_path, "batch-size", "--equal-steps")
    assert rc == 0
    records = _records(out)
    assert sorted(r["batch_size"] for r in records) == [2, 2, 4, 4, 16, 16]  # tiny's batch 16, 1/4, 1/16 (min 2)
    # 96 train images: 6 steps of 16 per epoch, so 1 epoch at 16, 1/4 epoch at 4, 1/8 epoch at 2: 6 steps each
    assert {r["steps"] for r in records} == {6}
    assert sorted(r["epochs"] for r in records) == pytest.approx([0.125, 0.125, 0.25, 0.25, 1.0, 1.0])
    md = (out / "batch-size-equal-steps.md").read_text()  # its own report: the equal-epochs one is kept
    assert "equal steps: each cell trains the epochs x batch / the largest batch" in md
    assert md.startswith("# Batch size at equal steps")
    assert not (out / "batch-size.md").exists() and (out / "batch-size-equal-steps.png").is_file()

"""``byol reproduce`` at smoke scale: every study runs its cells on generated images, records each cell once,
skips recorded cells on a re-run, writes a table and a plot, and flags the collapse cells."""

import json

import pytest

from byol.cli import main
from byol.reproduce import STUDY_NAMES, Scale, study_for
from byol.reproduce.report import summarize, table
from byol.reproduce.runner import cell_id

# A tiny CNN for 2 epochs of 96 generated images per cell.
SMOKE = ["--config", "tiny", "--epochs", "2", "--seeds", "0", "--eval-train", "0"]


def _run(split_folder, tmp_path, name, *extra):
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["reproduce", name, *SMOKE, "--data", str(split_folder), "--out", str(out), "--runs-dir", str(runs),
            "--set", f"data.cache_dir={tmp_path / 'cache'}", *extra]
    return main(args), out


@pytest.mark.slow
def test_every_study_runs_records_skips_and_reports(split_folder, tmp_path, capsys):
    rc, out = _run(split_folder, tmp_path, "all")
    assert rc == 0
    cells = sorted((out / "cells").glob("*.json"))
    # cells shared between studies (BYOL at the preset's settings) are trained once
    assert 0 < len(cells) < sum(len(study_for(n, Scale("tiny")).cells) for n in STUDY_NAMES)
    for name in STUDY_NAMES:
        md = (out / f"{name}.md").read_text()
        assert "| setting |" in md and "not run yet" not in md and "## The paper's claims, checked" in md
        assert (out / f"{name}.png").stat().st_size > 5000
    records = [json.loads(p.read_text()) for p in cells]
    # 3 balanced classes (12 test images each): a constant encoder or a probe that fits nothing scores 33%;
    # every cell scores 100% here (2 epochs do not collapse even the collapse cells on these easy images)
    assert all(r["knn"] > 60 and r["linear"] > 60 for r in records), [(r["knn"], r["linear"]) for r in records]
    mtimes = {p: p.stat().st_mtime_ns for p in cells}
    capsys.readouterr()

    rc, _ = _run(split_folder, tmp_path, "tau")  # a re-run trains nothing
    assert rc == 0
    log = capsys.readouterr().out
    assert "running" not in log and log.count("skipped") == len(study_for("tau", Scale("tiny")).cells)
    assert {p: p.stat().st_mtime_ns for p in cells} == mtimes


@pytest.mark.slow
def test_collapse_cells_are_detected(split_folder, tmp_path):
    # 15 epochs at a high lr: the no-predictor, no-target cell's projections collapse (their per-dimension
    # std falls under a tenth of 1/sqrt(d) by about step 40) while BYOL's stay near 0.8 of it
    rc, out = _run(split_folder, tmp_path, "components", "--epochs", "15", "--set", "optim.base_lr=5")
    assert rc == 0
    study = study_for("components", Scale("tiny"))
    records = {c.key: [json.loads((out / "cells" / f"{cell_id(c, _scale(split_folder, tmp_path, 15), 0)}.json")
                                  .read_text())] for c in study.cells}
    res = summarize(study, records)
    assert res["neither"]["collapsed"] == 1.0  # no predictor and no target network: collapse
    assert res["byol"]["collapsed"] == 0.0
    assert "| BYOL (predictor, EMA target) |" in table(study, res)


def _baselines_here():
    """The baselines cells this version can run (SwAV's is skipped until its method and preset exist)."""
    from byol.reproduce.recipes import available

    return len(available(study_for("baselines", Scale("tiny")).cells, lambda _: None))


def _scale(split_folder, tmp_path, epochs):
    return Scale("tiny", data=str(split_folder), budget=None, epochs=float(epochs), eval_train=None,
                 overrides=(f"data.cache_dir={tmp_path / 'cache'}", "optim.base_lr=5"))


def test_unknown_study_and_bad_epochs_are_one_line_errors(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "nope"])
    assert main(["reproduce", "tau", "--epochs", "0"]) == 2
    assert "--epochs must be positive" in capsys.readouterr().err


def test_cell_ids_depend_on_everything_that_changes_a_result():
    study = study_for("tau", Scale("tiny"))
    a, b = study.cells[0], study.cells[1]
    s = Scale("tiny", budget="1m")
    assert cell_id(a, s, 0) != cell_id(b, s, 0)
    assert cell_id(a, s, 0) != cell_id(a, s, 1)
    assert cell_id(a, s, 0) != cell_id(a, Scale("tiny", budget="2m"), 0)
    assert cell_id(a, s, 0) == cell_id(a, Scale("tiny", budget="1m"), 0)


def test_an_interrupted_cell_records_nothing_and_the_next_sweep_resumes_it(split_folder, tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM stops a cell's training cleanly: no record is written for it (an interrupted run is
    not a result) and the sweep stops; the next sweep continues that cell from its checkpoint."""
    from byol.train import loop as engine

    real_fit, calls = engine.Trainer.fit, {"n": 0}

    def fit_stopped_once(self):
        calls["n"] += 1
        if calls["n"] == 1:
            self.request_stop()  # what the first SIGINT/SIGTERM does
        return real_fit(self)

    monkeypatch.setattr(engine.Trainer, "fit", fit_stopped_once)
    rc, out = _run(split_folder, tmp_path, "baselines")
    assert rc == 130 and not list((out / "cells").glob("*.json"))
    resumed = []
    real_run = __import__("byol.train.pretrain", fromlist=["run_pretrain"]).run_pretrain

    def spy(cfg, run_dir, **kw):
        resumed.append(kw.get("resume", False))
        return real_run(cfg, run_dir, **kw)

    monkeypatch.setattr("byol.train.pretrain.run_pretrain", spy)
    rc, out = _run(split_folder, tmp_path, "baselines")
    assert rc == 0 and resumed[0] is True and len(list((out / "cells").glob("*.json"))) == _baselines_here()


@pytest.mark.slow
def test_cells_run_in_parallel_processes_record_what_one_process_records(split_folder, tmp_path, capsys):
    """``--jobs 2`` trains two cells at a time in their own processes; each record is the one a sequential
    sweep writes (same ids, same numbers at the same thread count), and the report is written."""
    one = tmp_path / "one"
    rc, out1 = _run(split_folder, one, "baselines", "--set", "train.threads=1")
    assert rc == 0
    rc, out2 = _run(split_folder, tmp_path / "two", "baselines", "--set", "train.threads=1", "--jobs", "2")
    assert rc == 0
    seq = {p.name: json.loads(p.read_text()) for p in (out1 / "cells").glob("*.json")}
    par = {p.name: json.loads(p.read_text()) for p in (out2 / "cells").glob("*.json")}
    assert len(seq) == _baselines_here() and seq.keys() == par.keys()
    for name in seq:
        for key in ("knn", "linear", "steps", "final_loss", "method"):
            assert par[name][key] == seq[name][key], (name, key)
    assert "| SimCLR |" in (out2 / "baselines.md").read_text()
    assert main(["reproduce", "tau", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_report_only_trains_nothing_and_reports_what_is_recorded(split_folder, tmp_path, capsys):
    """A sweep in progress: --report-only writes the table of the recorded cells, the others 'not run yet'."""
    from byol.reproduce.runner import record_cell

    scale = Scale("tiny", data=str(split_folder), budget=None, epochs=1.0, eval_train=None,
                  overrides=(f"data.cache_dir={tmp_path / 'cache'}",))
    study = study_for("baselines", scale)
    record_cell(study.cells[0], scale, 0, tmp_path / "out" / "cells", tmp_path / "runs")  # BYOL only
    capsys.readouterr()
    rc, out = _run(split_folder, tmp_path, "baselines", "--epochs", "1", "--report-only")
    assert rc == 0
    log = capsys.readouterr().out
    others = _baselines_here() - 1
    assert "running" not in log and log.count("not run yet") == others and len(list((out / "cells").glob("*.json"))) == 1
    md = (out / "baselines.md").read_text()
    assert "| BYOL |" in md and md.count("not run yet") == others and "--report-only" not in md


def test_the_committed_records_are_found_now_that_each_method_has_its_own_section():
    """docs/results/cells were named when one class held every method's keys (MoCo's m was ``momentum``);
    their cells (BYOL, SimCLR on a BYOL preset, MoCo) must still hash to those names. Since recipes, the
    baselines study runs SimCLR and MoCo on their own presets (new cells); BYOL's cell is the one it was."""
    from pathlib import Path

    from byol.reproduce import Cell

    root = Path(__file__).resolve().parents[2] / "docs" / "results"
    scale = Scale(str(root / "cifar10-cpu.yaml"), data="../shared/datasets/cifar10-jpeg.zip", budget=None, epochs=3.0,
                  eval_train=10000, overrides=("train.threads=1", "train.progress=false"))
    byol = study_for("baselines", scale).cells[0]
    assert byol.key == "byol" and byol.recipe is None
    for cell in (byol, Cell("simclr", "SimCLR", "simclr")):  # SimCLR on the BYOL preset: augmentations' full views
        for seed in (0, 1):
            assert (root / "cells" / f"{cell_id(cell, scale, seed)}.json").is_file(), (cell.key, seed)
    # MoCo on the BYOL preset (its m was ``momentum``): no report reads that cell since the recipes, and its
    # records, written by the v1 code under these names, left cells/ with the other records without
    # provenance (git history before the ladder's 3-epoch re-runs); the names they had:
    moco = Cell("moco", "MoCo v2", "moco")
    assert [cell_id(moco, scale, s) for s in (0, 1)] == ["e0d5de20c024-s0", "4c6ebeeda652-s1"]


def test_the_random_init_cell_is_the_fair_floor(split_folder, tmp_path, monkeypatch):
    """Both variants of the random network are evaluated (BN's initial and train-recalibrated statistics),
    each metric of the record is the stronger one, and the recalibration is fed train images only."""
    import torch

    import byol.reproduce.runner as runner

    seen = []
    real = runner.recalibrate_bn

    def spy(encoder, images, **kw):
        seen.append(torch.as_tensor(images).clone())
        return real(encoder, images, **kw)

    monkeypatch.setattr(runner, "recalibrate_bn", spy)
    cell = next(c for c in study_for("tau", Scale("tiny")).cells if c.method == "random-init")
    record = runner.run_cell(cell, _scale(split_folder, tmp_path, 1), 0, tmp_path / "runs")
    variants = record["floor_variants"]
    assert set(variants) == {"initial BN statistics", "BN recalibrated"}
    for m in ("knn", "linear"):
        assert record[m] == max(v[m] for v in variants.values())
    assert len(seen) == 1 and seen[0].shape[0] == 96  # the 3 x 32 train images, none of the test split


def test_records_say_which_code_made_them(split_folder, tmp_path):
    """A record carries the commit (and whether the package had uncommitted changes), versions, CPU, threads,
    the command and the fully resolved config; a table whose records come from several commits says so."""
    import byol
    from byol.reproduce.report import provenance_line
    from byol.reproduce.runner import run_cell

    cell = next(c for c in study_for("tau", Scale("tiny")).cells if c.method == "random-init")
    p = run_cell(cell, _scale(split_folder, tmp_path, 1), 0, tmp_path / "runs")["provenance"]
    assert p["byol"] == byol.__version__ and p["torch"] and p["torchvision"] and p["cpu"] and p["threads"] >= 1
    assert "git_commit" in p and p["git_dirty"] in (True, False, None) and isinstance(p["argv"], list)
    assert p["config"]["model"]["backbone"] == "convnet" and p["config"]["train"]["seed"] == 0  # resolved
    one = {"a": [{"provenance": {"git_commit": "abc1234567890", "git_dirty": False}}]}
    two = {**one, "b": [{"provenance": {"git_commit": "def9876543210", "git_dirty": True}}, {}]}
    assert provenance_line(one) == "- code: commit abc1234567"
    line = provenance_line(two)
    assert "3 different commits" in line and "def9876543 (uncommitted changes): 1" in line
    assert "unknown (not recorded): 1" in line


def test_a_table_from_several_machines_or_precisions_says_so():
    from byol.reproduce.report import machines_line, mixed_lengths_lines

    amx = {"provenance": {"cpu": "Xeon"}, "precision": "bf16 autocast"}
    one = {"a": [amx, dict(amx)]}
    assert machines_line(one) == "- machine: Xeon, bf16 autocast"
    mixed = {**one, "b": [{"provenance": {"cpu": "EPYC"}, "precision": "fp32"},
                          {"provenance": {"cpu": "Xeon", "cuda": "A100"}, "precision": "bf16 autocast"}]}
    line = machines_line(mixed)
    assert "the records come from 3 machines or precisions" in line
    assert "(A100, bf16 autocast: 1; EPYC, fp32: 1; Xeon, bf16 autocast: 2)" in line
    assert machines_line({"a": [{"precision": "fp32"}]}) == "- machine: unknown machine, fp32"
    assert machines_line({**one, "r": [{"method": "random-init", "provenance": {"cpu": "EPYC"}}]}) == (
        "- machine: Xeon, bf16 autocast")  # nothing trained: no precision, and its machine does not matter
    assert mixed_lengths_lines({3.0: one, 10.0: mixed}) == [
        "- at 10 epochs the records come from 3 machines or precisions (A100, bf16 autocast: 1; EPYC, fp32: 1; "
        "Xeon, bf16 autocast: 2)", ""]
    assert mixed_lengths_lines({3.0: one}) == []


@pytest.fixture
def train_val_folder(split_folder, tmp_path):
    """The generated set with its evaluation split named ``val/`` (a folder with train/ + val/, no test/)."""
    import shutil

    root = tmp_path / "tv"
    shutil.copytree(split_folder / "train", root / "train")
    shutil.copytree(split_folder / "test", root / "val")
    return root


def test_a_folder_with_train_and_val_is_scored_on_val(train_val_folder, tmp_path, capsys):
    rc, out = _run(train_val_folder, tmp_path, "baselines", "--epochs", "1")
    assert rc == 0
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert {r["method"] for r in records} >= {"byol", "simclr", "moco"}
    assert "not run yet" not in (out / "baselines.md").read_text()


def test_a_folder_without_a_labeled_evaluation_split_is_refused_before_training(split_folder, tmp_path, capsys):
    rc, out = _run(split_folder / "train", tmp_path, "baselines", "--epochs", "1")
    assert rc == 2
    err = capsys.readouterr().err
    assert "reproductions score each cell on a labeled evaluation split (test/ or val/" in err
    assert not (tmp_path / "runs").exists() and not list((out / "cells").glob("*.json"))  # nothing trained

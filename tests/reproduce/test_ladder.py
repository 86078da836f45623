"""The scale ladder of ``byol reproduce``: claim margins (signed, per seed), their verdict at each length, the
"holds from N epochs on" sentence, the report's section and plot, the order and resumption of the work,
``--cells``, and ``--equal-steps`` at several lengths. Records are hand-made (or written by a fake trainer),
so every number below is computed by hand; one slow test trains for real."""

import dataclasses
import json
import math
import re
import shutil
import statistics
from pathlib import Path

import pytest

from byol.cli import main
from byol.reproduce import Scale, rungs, study_for
from byol.reproduce.ladder import FAILS, HOLDS, NOISE, UNMEASURED, Rung, holds_from, rung, seed_margins
from byol.reproduce.report import write_report
from byol.reproduce.runner import cell_config, cell_id, write_record
from byol.reproduce.studies import components, tau

TAU = tau(0.97)
BEATS_RANDOM, LOSES_TO_EMA, COLLAPSES = TAU.claims[1], TAU.claims[2], TAU.claims[0]


def _rec(seed, knn, linear=50.0, collapsed=False, epochs=3.0):
    return {"seed": seed, "knn": knn, "linear": linear, "collapsed": collapsed, "epochs": epochs, "num_classes": 10,
            "wall_seconds": 60.0}


def test_margins_are_signed_points_and_hold_exactly_when_the_check_does():
    res = {"tau-1": {"knn": 43.5, "linear": 51.0, "collapsed": 0.0},
           "random-init": {"knn": 39.5, "linear": 47.0, "collapsed": 0.0},
           "tau-cosine": {"knn": 41.75, "linear": 52.0, "collapsed": 0.0},
           "tau-0": {"knn": 31.0, "linear": 43.0, "collapsed": 0.0}}
    assert BEATS_RANDOM.margin(res, 10.0) == pytest.approx(4.0) and BEATS_RANDOM.check(res, 10.0) is True
    assert LOSES_TO_EMA.margin(res, 10.0) == pytest.approx(-1.75) and LOSES_TO_EMA.check(res, 10.0) is False
    assert COLLAPSES.margin(res, 10.0) == pytest.approx(20.0 - 31.0) and COLLAPSES.check(res, 10.0) is False
    res["tau-0"]["collapsed"] = 1.0  # the monitor fired on every seed: collapsed whatever the kNN
    assert COLLAPSES.margin(res, 10.0) == pytest.approx(-11.0) and COLLAPSES.check(res, 10.0) is True
    assert COLLAPSES.margin(res, 25.0) == pytest.approx(4.0)  # 3 classes: chance 25 (+ 10 = 35 > 31)
    del res["random-init"]
    assert BEATS_RANDOM.margin(res, 10.0) is None and BEATS_RANDOM.check(res, 10.0) is None


def test_the_other_margins_drops_ge_and_beats_all():
    aug = study_for("augmentations", Scale("tiny")).claims[0]  # BYOL loses less than SimCLR without colour (linear)
    res = {"byol-full": {"linear": 50.0}, "byol-no-colour": {"linear": 48.0},   # BYOL drops 2
           "simclr-full": {"linear": 52.0}, "simclr-no-colour": {"linear": 47.0}}  # SimCLR drops 5
    assert aug.margin(res, 10.0) == pytest.approx(3.0) and aug.check(res, 10.0) is True
    comp = components()
    beats, negatives = comp.claims[2], comp.claims[3]
    r = {"byol": {"knn": 42.0, "linear": 52.0}, "no-predictor": {"knn": 31.0}, "neither": {"knn": 40.5},
         "negatives": {"linear": 52.0}}
    assert beats.margin(r, 10.0) == pytest.approx(1.5)  # the smallest: over "neither" (no-target not measured)
    assert negatives.margin(r, 10.0) == 0.0 and negatives.check(r, 10.0) is True  # ">=": a tie holds
    r["negatives"]["linear"] = 52.5
    assert negatives.check(r, 10.0) is False
    assert beats.margin({"byol": {"knn": 42.0}}, 10.0) is None  # no collapsed variant measured: cannot tell


def test_margins_pair_the_cells_records_by_seed():
    records = {"tau-1": [_rec(1, 40.0), _rec(0, 45.0), _rec(2, 44.0)],  # order of the lists does not matter
               "random-init": [_rec(0, 41.0), _rec(1, 42.0)]}  # seed 2 has no random-init record: no margin
    assert seed_margins(TAU, BEATS_RANDOM, records, 10.0) == (4.0, -2.0)
    r = rung(TAU, BEATS_RANDOM, 10.0, records, 10.0)
    assert r.n == 2 and r.mean == pytest.approx(1.0) and r.sd == pytest.approx(math.sqrt(18.0))
    assert r.verdict == NOISE  # |1.0| < 4.24


@pytest.mark.parametrize("pairs, verdict", [
    (((45.0, 41.0), (44.0, 41.0)), HOLDS),  # margins 4, 3: mean 3.5 > sd 0.71
    (((40.0, 41.0), (40.5, 43.0)), FAILS),  # -1, -2.5
    (((45.0, 41.0), (40.0, 42.0)), NOISE),  # 4, -2
    (((45.0, 41.0),), HOLDS),  # one seed: no spread
])
def test_a_rung_holds_fails_or_is_within_noise(pairs, verdict):
    records = {"tau-1": [_rec(s, a) for s, (a, _) in enumerate(pairs)],
               "random-init": [_rec(s, b) for s, (_, b) in enumerate(pairs)]}
    assert rung(TAU, BEATS_RANDOM, 3.0, records, 10.0).verdict == verdict
    assert rung(TAU, BEATS_RANDOM, 3.0, {"tau-1": records["tau-1"]}, 10.0).verdict == UNMEASURED


def test_a_collapse_rung_holds_by_the_monitor_even_with_a_negative_margin():
    records = {"tau-0": [_rec(0, 31.0, collapsed=True), _rec(1, 30.0, collapsed=True)]}
    r = rung(TAU, COLLAPSES, 30.0, records, 10.0)
    assert r.verdict == HOLDS and r.monitor and r.mean == pytest.approx(-10.5)
    records["tau-0"][1]["collapsed"] = False  # 1 of 2 seeds: not most
    assert rung(TAU, COLLAPSES, 30.0, records, 10.0).verdict == FAILS


def _ladder(*verdicts, lengths=(3.0, 10.0, 30.0)):
    return [Rung(e, () if v == UNMEASURED else (1.0,), v) for e, v in zip(lengths, verdicts)]


@pytest.mark.parametrize("verdicts, sentence", [
    ((HOLDS, HOLDS, HOLDS), "holds from 3 epochs on (every length measured)"),
    ((FAILS, HOLDS, HOLDS), "holds from 10 epochs on"),
    ((NOISE, FAILS, HOLDS), "holds from 30 epochs on"),
    ((HOLDS, FAILS, HOLDS), "holds from 30 epochs on"),  # flips: only the longer rungs count
    ((HOLDS, HOLDS, FAILS), "does not hold up to 30 epochs (the longest run); it held at 3, 10 epochs"),
    ((FAILS, FAILS, FAILS), "does not hold up to 30 epochs (the longest run)"),
    ((FAILS, HOLDS, NOISE), "does not hold up to 30 epochs (the longest run); within the seed spread there; "
                            "it held at 10 epochs"),
    ((UNMEASURED, HOLDS, HOLDS), "holds from 10 epochs on (every length measured)"),
    ((HOLDS, FAILS, UNMEASURED), "does not hold up to 10 epochs (the longest run); it held at 3 epochs"),
    ((UNMEASURED, UNMEASURED, UNMEASURED), "not measured yet"),
    ((HOLDS, UNMEASURED, UNMEASURED), "holds at 3 epochs (the only length measured)"),
    ((FAILS, UNMEASURED, UNMEASURED), "does not hold up to 3 epochs (the longest run)"),
])
def test_holds_from(verdicts, sentence):
    assert holds_from(_ladder(*verdicts)) == sentence


def _tau_records(epochs, shift):
    """tau-1 beats random init by 2 + shift (seed 0) and 4 + shift (seed 1); the other cells not run."""
    return {"tau-1": [_rec(0, 42.0 + shift, epochs=epochs), _rec(1, 44.0 + shift, epochs=epochs)],
            "random-init": [_rec(0, 40.0, epochs=0.0), _rec(1, 40.0, epochs=0.0)]}


def test_the_report_adds_the_ladder_section_and_plot_with_two_lengths_or_more(tmp_path):
    by_length = {3.0: _tau_records(3.0, -5.0), 30.0: _tau_records(30.0, 0.0)}
    scale = {"preset": "tiny", "epochs": 30.0, "eval_train": None}
    md, _ = write_report(TAU, by_length[30.0], tmp_path, command="c", scale=scale, seeds=(0, 1), ladder=by_length)
    text = md.read_text()
    assert "## Scale ladder" in text and "The tables above are at 30 epochs." in text
    sd = statistics.stdev([2.0, 4.0])
    # 3 epochs: margins -3, -1 (mean -2 outside sd 1.41); 30: margins 2, 4
    assert (f"| tau = 1 (fixed random target) beats random init (kNN) | -2.00 ± {sd:.2f} (n=2), does not hold | "
            f"+3.00 ± {sd:.2f} (n=2), holds |") in text
    assert "| tau = 0 collapses | - | - |" in text
    assert "- tau = 1 (fixed random target) beats random init (kNN): holds from 30 epochs on" in text
    assert "- tau = 0 collapses: not measured yet" in text  # the ladder's verdict: at no length
    # the table's claims, at 30 epochs: the ladder is where a claim of another length would be
    assert "- tau = 0 collapses: not measured at this length (see the scale ladder)" in text
    assert "(8.0 min of wall time in all)" in text  # 8 records of 60 s
    assert "![Target decay rate tau: margins against length](tau-ladder.png)" in text
    assert (tmp_path / "tau-ladder.png").stat().st_size > 5000
    one = tmp_path / "one"
    md, _ = write_report(TAU, by_length[30.0], one, command="c", scale=scale, seeds=(0, 1),
                         ladder={3.0: {}, 30.0: by_length[30.0]})  # records at one length only: as before
    assert "Scale ladder" not in md.read_text() and not (one / "tau-ladder.png").exists()
    assert "- tau = 0 collapses: not measured yet" in md.read_text()  # no ladder: nowhere else to look
    plain, _ = write_report(TAU, by_length[30.0], tmp_path / "plain", command="c", scale=scale, seeds=(0, 1))
    assert plain.read_text() == md.read_text()


def test_the_ladder_shows_only_the_lengths_where_a_claim_is_measured(tmp_path):
    # tau-1 and random-init at 3 and 30 epochs; at 10 only a cell no claim reads with tau-1 (tau 0.9, shared
    # with another study, say): that length is no column, and its records count in no total
    by_length = {3.0: _tau_records(3.0, -5.0), 10.0: {"tau-0.9": [_rec(0, 50.0, epochs=10.0)]},
                 30.0: _tau_records(30.0, 0.0)}
    scale = {"preset": "tiny", "epochs": 30.0, "eval_train": None}
    text = write_report(TAU, by_length[30.0], tmp_path, command="c", scale=scale, seeds=(0, 1),
                        ladder=by_length)[0].read_text()
    assert "| claim | 3 epochs | 30 epochs |" in text and "Records at 3, 30 epochs (8.0 min" in text
    short = {3.0: _tau_records(3.0, -5.0), 10.0: {"tau-0.9": [_rec(0, 50.0, epochs=10.0)]}}
    text = write_report(TAU, short[3.0], tmp_path / "s", command="c", scale={**scale, "epochs": 3.0}, seeds=(0, 1),
                        ladder=short)[0].read_text()  # one length measured: its margins, and the sentence
    assert "| claim | 3 epochs |\n|---|---|\n" in text and "Records at 3 epochs (4.0 min" in text
    assert "beats random init (kNN): does not hold up to 3 epochs (the longest run)" in text


RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.mark.parametrize("stem", sorted(p.stem for p in RESULTS.glob("*.md") if p.stem != "ladder"
                                         and not p.stem.endswith(".notes")))
def test_the_committed_reports_come_out_unchanged(stem, tmp_path, monkeypatch):
    """Regenerating a committed report from its records, with the lengths (and the equal-time cells and batch
    ladder) its command names, gives the committed file, its claims' verdicts and its ladder section (records
    at other lengths) included."""
    from byol.reproduce import reproduce

    monkeypatch.chdir(RESULTS.parents[1])  # the preset as the committed command names it
    shutil.copytree(RESULTS / "cells", tmp_path / "cells")
    if (RESULTS / f"{stem}.notes.md").is_file():
        shutil.copy(RESULTS / f"{stem}.notes.md", tmp_path)
    committed = (RESULTS / f"{stem}.md").read_text()
    command = re.search(r"- command: `(.*)`", committed).group(1)
    name = command.split()[2]  # byol reproduce NAME ...
    scale = dataclasses.replace(_committed_scale(), preset="docs/results/cifar10-cpu.yaml")
    epochs = tuple(float(e) for e in re.search(r"--epochs ([\d. ]+?) --", command).group(1).split())
    batches = re.search(r"--batch-sizes ([\d ]+?)(?: --|$)", command)
    seeds = tuple(int(x) for x in re.search(r"--seeds ([\d ]+?) --", command).group(1).split())
    md, _ = reproduce(name, scale, seeds=seeds, out_dir=tmp_path, command=command, train=False, epochs=epochs,
                      equal_time="--equal-time" in command, equal_steps="--equal-steps" in command,
                      batch_sizes=tuple(int(b) for b in batches.group(1).split()) if batches else None,
                      log=lambda _: None)
    assert md.name == f"{stem}.md" and md.read_text() == committed
    assert (tmp_path / f"{stem}-ladder.png").exists() == ("## Scale ladder" in committed)


def _committed_scale():
    return Scale(str(RESULTS / "cifar10-cpu.yaml"), data="../shared/datasets/cifar10-jpeg.zip", budget=None,
                 epochs=3.0, eval_train=10000, overrides=("train.threads=1", "train.progress=false"))


def test_rungs_are_sorted_fixed_lengths_and_one_length_is_the_scale_itself():
    s = Scale("tiny", budget="2m")
    assert rungs(s) == (s,)
    assert [r.epochs for r in rungs(s, (30, 3, 10, 3))] == [3.0, 10.0, 30.0]
    assert all(r.budget is None for r in rungs(s, (3,)))
    one = Scale("tiny", budget=None, epochs=3.0)
    assert rungs(one, (3.0,)) == (one,)


def test_unknown_cells_are_a_one_line_error(capsys):
    assert main(["reproduce", "tau", "--epochs", "1", "--cells", "tau-0", "tau-2"]) == 2
    err = capsys.readouterr().err
    assert ("--cells: no cell 'tau-2' in tau; its cells are tau-0, tau-0.9, tau-0.99, tau-cosine, tau-1, "
            "random-init") in err
    assert len(err.strip().splitlines()) == 1
    from byol.reproduce import cells_by_study

    # with several studies (``all``) each takes the keys that are its cells; a key of none is the error
    got = cells_by_study(("tau", "components"), ("tau-0", "byol"), Scale("tiny"))
    assert got == {"tau": ("tau-0",), "components": ("byol",)}
    assert cells_by_study(("tau",), None, Scale("tiny")) == {"tau": None}


def _fake_trainer(monkeypatch, calls):
    """``record_cell`` without training: kNN = 40 + (epochs x a per-cell slope) + seed, written as a record."""
    import byol.reproduce.runner as runner
    import byol.run.files as files

    slope = {"tau-1": 0.5, "tau-cosine": 1.0, "random-init": 0.0}

    def fake(cell, scale, seed, cells_dir, runs_dir):
        cfg = cell_config(cell, scale, seed)
        calls.append((cell.key, seed, scale.epochs, cfg.train.epochs, cfg.optim.batch_size, cfg.train.budget))
        record = {**_rec(seed, 40.0 + slope.get(cell.key, 0.1) * scale.epochs + seed, epochs=cfg.train.epochs),
                  "method": cell.method, "label": cell.label, "scale": scale.describe(),
                  "pretrain_seconds": 10.0 * scale.epochs + seed, "provenance": {"cpu": files.cpu_model()}}
        write_record(cells_dir / f"{cell_id(cell, scale, seed)}.json", record)
        return record

    monkeypatch.setattr(runner, "record_cell", fake)


def _cli(folder, out, name, *extra):
    return main(["reproduce", name, "--config", "tiny", "--data", str(folder), "--out", str(out), "--eval-train", "0",
                 "--runs-dir", str(out / "runs"), "--set", f"data.cache_dir={out / 'cache'}", *extra])


def test_a_ladder_runs_the_shortest_length_first_resumes_and_reports(split_folder, tmp_path, monkeypatch, capsys):
    calls = []
    _fake_trainer(monkeypatch, calls)
    out = tmp_path / "out"
    key = ("--cells", "tau-1", "tau-cosine", "random-init")
    assert _cli(split_folder, out, "tau", "--epochs", "10", "3", "--seeds", "0", "1", *key) == 0
    assert [c[2] for c in calls] == [3.0] * 6 + [10.0] * 6  # every cell and seed at 3 epochs, then at 10
    assert {c[0] for c in calls} == {"tau-1", "tau-cosine", "random-init"}  # only the cells asked for
    assert all(c[3] == c[2] for c in calls if c[0] != "random-init")
    log = capsys.readouterr().out
    assert "[1/12, 3 epochs] cosine from tau 0.99 (the preset), seed 0: running" in log
    text = (out / "tau.md").read_text()
    assert "10 epochs per cell" in text and "| constant tau 0 | not run yet |" in text
    # cosine - tau 1 = 0.5 x epochs at both seeds: +1.50 at 3, +5.00 at 10; tau 1 - random init = 0.5 x epochs
    assert "| tau = 1 loses clearly to the EMA target (cosine, kNN) | +1.50 ± 0.00 (n=2), holds | " \
           "+5.00 ± 0.00 (n=2), holds |" in text
    assert "- tau = 1 loses clearly to the EMA target (cosine, kNN): holds from 3 epochs on (every length" in text
    assert (out / "tau-ladder.png").is_file()

    calls.clear()  # a longer rung later: only it trains, and the report finds the earlier ones
    before = (out / "tau.md").read_text()
    again = ("tau", "--epochs", "3", "10", "30", "--seeds", "0", "1", *key)
    monkeypatch.setattr("sys.argv", ["byol", "reproduce", *again])  # the command the report would name
    assert _cli(split_folder, out, *again) == 0
    assert {c[2] for c in calls} == {30.0} and len(calls) == 6
    # a run of some cells keeps the report another command wrote (its lengths and comparisons), and says so
    assert (out / "tau.md").read_text() == before
    assert "tau.md kept: it is the report of `byol reproduce tau`; run that with --report-only" in capsys.readouterr().out
    calls.clear()
    assert _cli(split_folder, out, "tau", "--epochs", "30", "--seeds", "0", "1", "--report-only") == 0
    assert not calls
    text = (out / "tau.md").read_text()
    assert "| claim | 3 epochs | 10 epochs | 30 epochs |" in text and "30 epochs per cell" in text
    assert "+15.00 ± 0.00 (n=2), holds |" in text


def test_one_length_is_todays_report_and_a_budget_has_no_ladder(split_folder, tmp_path, monkeypatch):
    calls = []
    _fake_trainer(monkeypatch, calls)
    out = tmp_path / "one"
    assert _cli(split_folder, out, "tau", "--epochs", "2", "--seeds", "0", "--cells", "tau-1", "random-init") == 0
    assert [c[2] for c in calls] == [2.0, 2.0]
    assert "Scale ladder" not in (out / "tau.md").read_text() and not (out / "tau-ladder.png").exists()


def test_equal_steps_holds_at_every_length_of_a_ladder(split_folder, tmp_path, monkeypatch):
    calls = []
    _fake_trainer(monkeypatch, calls)
    assert _cli(split_folder, tmp_path / "b", "batch-size", "--equal-steps", "--epochs", "1", "4", "--seeds", "0") == 0
    # tiny's batch 16, 4 and 2: each cell trains the rung's epochs x batch / 16
    got = sorted((c[2], c[4], c[3]) for c in calls)
    want = sorted((e, b, e * b / 16) for e in (1.0, 4.0) for b in (16, 4, 2) for _ in ("byol", "simclr"))
    assert got == want  # exact: products of powers of two
    assert [c[2] for c in calls] == [1.0] * 6 + [4.0] * 6


def test_equal_steps_is_its_own_report_and_shares_the_reference_records(split_folder, tmp_path, monkeypatch):
    calls = []
    _fake_trainer(monkeypatch, calls)
    out = tmp_path / "b"
    assert _cli(split_folder, out, "batch-size", "--epochs", "1", "--seeds", "0") == 0
    assert len(calls) == 6 and (out / "batch-size.md").is_file()
    before = (out / "batch-size.md").read_text()
    calls.clear()
    assert _cli(split_folder, out, "batch-size", "--equal-steps", "--epochs", "1", "--seeds", "0") == 0
    # the largest batch trains the same config at equal steps (its records are reused); the others train
    assert sorted((c[0], c[4]) for c in calls) == [("byol-b2", 2), ("byol-b4", 4), ("simclr-b2", 2), ("simclr-b4", 4)]
    assert (out / "batch-size.md").read_text() == before  # the equal-epochs report is not overwritten
    steps = (out / "batch-size-equal-steps.md").read_text()
    assert "| BYOL, batch 16 | 40.10 |" in steps and "not run yet" not in steps


def test_jobs_of_one_config_under_two_keys_train_once(tmp_path, monkeypatch):
    import byol.reproduce.runner as runner
    from byol.reproduce.studies import Cell

    trained = []
    monkeypatch.setattr(runner, "check_eval_split", lambda scale: None)
    monkeypatch.setattr(runner, "record_cell", lambda cell, scale, seed, cells_dir, runs_dir: trained.append(cell.key)
                        or _rec(seed, 50.0))
    scale = Scale("tiny", budget=None, epochs=1.0)
    a, b = Cell("byol-b16", "a", "byol"), Cell("byol-b16@steps", "b", "byol")
    assert cell_id(a, scale, 0) == cell_id(b, scale, 0)  # the key is not part of the config
    runner.run_jobs([(a, 0, scale), (b, 0, scale), (a, 1, scale)], tmp_path, tmp_path / "runs", log=lambda _: None)
    assert trained == ["byol-b16", "byol-b16"]  # seeds 0 and 1 once each, in the order given


def test_equal_time_cells_follow_byols_seconds_at_each_length(split_folder, tmp_path, monkeypatch):
    calls = []
    _fake_trainer(monkeypatch, calls)
    out = tmp_path / "t"
    assert _cli(split_folder, out, "baselines", "--equal-time", "--epochs", "1", "2", "--seeds", "0",
                "--cells", "byol", "simclr") == 0
    # BYOL and SimCLR at 1 epoch, then at 2; then SimCLR for BYOL's seconds (10 x epochs + seed) at each length
    assert [(c[0], c[2], c[5]) for c in calls] == [
        ("byol", 1.0, None), ("simclr", 1.0, None), ("byol", 2.0, None), ("simclr", 2.0, None),
        ("simclr@time", 1.0, "10.0s"), ("simclr@time", 2.0, "20.0s")]
    text = (out / "baselines.md").read_text()
    assert "## At equal wall time" in text and "| SimCLR, BYOL's wall time |" in text
    assert "| BYOL >= SimCLR (linear, equal wall time) | +0.00 (n=1), holds | +0.00 (n=1), holds |" in text
    # kNN: BYOL 40 + 0.1 e, SimCLR 40 + 0.1 e at equal steps (a tie holds)
    assert "| BYOL >= MoCo v2 (kNN, equal steps) | - | - |" in text


def test_equal_time_cells_need_byols_record_timed_on_this_machine(split_folder, tmp_path, monkeypatch, capsys):
    import byol.run.files as files

    calls = []
    _fake_trainer(monkeypatch, calls)
    out = tmp_path / "t"
    args = ("baselines", "--equal-time", "--epochs", "1", "--seeds", "0", "--cells", "byol", "simclr")
    monkeypatch.setattr(files, "cpu_model", lambda: "CPU A")
    assert _cli(split_folder, out, "baselines", "--epochs", "1", "--seeds", "0", "--cells", "byol") == 0
    monkeypatch.setattr(files, "cpu_model", lambda: "CPU B")  # BYOL's seconds were measured on CPU A
    assert _cli(split_folder, out, *args) == 0
    assert [c[0] for c in calls] == ["byol", "simclr"]  # no simclr@time
    assert ("1 epoch, seed 0: equal wall time cells not trained (BYOL's record ran on CPU A, this machine is "
            "CPU B: its seconds are no budget here") in capsys.readouterr().out
    assert "| SimCLR, BYOL's wall time | not run yet |" in (out / "baselines.md").read_text()
    assert _cli(split_folder, out, *args, "--report-only") == 0  # trains nothing, so nothing to explain
    assert "not trained" not in capsys.readouterr().out
    monkeypatch.setattr(files, "cpu_model", lambda: "CPU A")  # back on the machine that timed BYOL
    assert _cli(split_folder, out, *args) == 0
    assert [c[0] for c in calls] == ["byol", "simclr", "simclr@time"]


def test_a_tiny_ladder_trains_and_reports_both_lengths(split_folder, tmp_path):
    out = tmp_path / "out"
    assert _cli(split_folder, out, "tau", "--epochs", "0.5", "1", "--seeds", "0") == 0
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    cells = study_for("tau", Scale("tiny")).cells
    assert sorted((r["label"], r["scale"]["epochs"]) for r in records) == sorted(
        (c.label, e) for c in cells for e in (0.5, 1.0))
    assert sorted(r["epochs"] for r in records if r["method"] != "random-init") == [0.5] * 5 + [1.0] * 5
    text = (out / "tau.md").read_text()
    assert "| claim | 0.5 epochs | 1 epoch |" in text and "(n=1)" in text and "not run yet" not in text
    sentence = r"\n- .*: (holds from (0\.5 epochs|1 epoch) on|does not hold up to 1 epoch \(the longest run)"
    assert len(re.findall(sentence, text)) == len(study_for("tau", Scale("tiny")).claims) == 4  # one per claim
    assert (out / "tau-ladder.png").stat().st_size > 5000

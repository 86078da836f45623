"""benchmarks/sweep_folder.py: one row per (variant, seed) with the verdict and the curves, scored on train
only, appended as it finishes and skipped on a re-run; the table ranks the variants."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "sweep_folder.py"


def _load():
    spec = importlib.util.spec_from_file_location("sweep_folder", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_are_recorded_once_with_the_validation_verdict_and_curves(image_folder, tmp_path, capsys):
    sweep = _load()
    out = tmp_path / "rows.jsonl"
    args = ["--data", str(image_folder), "--config", "tiny", "--epochs", "2", "--variants", "base", "lr0.3",
            "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--set", f"data.cache_dir={tmp_path / 'c'}",
            "--set", "train.knn_every=1"]
    assert sweep.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["base", "lr0.3"] and rows[1]["overrides"] == ["optim.base_lr=0.3"]
    for r in rows:
        assert r["epochs"] == 2 and r["steps"] > 0 and r["score"].startswith("val")
        # 3 balanced classes: a constant (collapsed) encoder's kNN scores chance, 33%; both score 100% here
        assert r["encoder_knn"] > 60 and r["random_knn"] > 60
        assert r["gain"] == round(r["encoder_knn"] - r["random_knn"], 2)
        assert [round(e) for e, _ in r["knn_curve"]] == [1, 2]  # the online kNN after each epoch
        assert r["upd"] and all(v["1"] > 0 for v in r["upd"].values())  # each layer moved in epoch 1
    # the two variants trained differently (the override reached the run)
    assert rows[0]["loss"] != rows[1]["loss"]
    # ... while random init is the same network on the same split whatever the variant (the seed's)
    assert rows[0]["random_knn"] == rows[1]["random_knn"]
    capsys.readouterr()
    assert sweep.main(args) == 0  # a re-run trains nothing
    assert capsys.readouterr().out.count("skipped") == 2 and len(out.read_text().splitlines()) == 2
    assert sweep.main(["--table", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("| imgs | epochs=2.0 |") == 2 and "optim.base_lr=0.3" in table


def test_table_averages_seeds_and_marks_curve_points_a_row_did_not_reach(tmp_path):
    sweep = _load()
    base = {"data": "d/set.zip", "length": "budget=1m", "variant": "v", "overrides": [], "epochs": 2.5,
            "pairs_s": 100.0, "random_knn": 50.0, "eff_rank": {"1": 4.0}}
    rows = [{**base, "seed": 0, "encoder_knn": 60.0, "gain": 10.0, "knn_curve": [[1.0, 52.0], [2.5, 58.0]]},
            {**base, "seed": 1, "encoder_knn": 56.0, "gain": 6.0, "knn_curve": [[1.0, 54.0], [2.5, 56.0]]}]
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = sweep.table(out).splitlines()[2]
    # gain 8 +- stdev(10, 6) = 2.8; kNN 53 at epoch 1, 57 at 2 (the first point at or after), none at 3 and 5
    assert "| 2 | 2.5 | 100 | 58.00 | 50.00 | +8.00 ± 2.8 | 53.0 / 57.0 / - / - | 4.0 / - |" in line


def test_linear_rows_score_a_train_only_validation_split_and_are_rows_of_their_own(image_folder, tmp_path, capsys):
    sweep = _load()
    out = tmp_path / "rows.jsonl"
    common = ["--data", str(image_folder), "--config", "tiny", "--epochs", "1", "--out", str(out),
              "--runs-dir", str(tmp_path / "runs"), "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert sweep.main(common) == 0
    assert sweep.main([*common, "--linear"]) == 0  # not the row above: trained and scored again
    plain, lin = [json.loads(line) for line in out.read_text().splitlines()]
    assert plain["key"] != lin["key"] and "linear_val" not in plain
    # 3 balanced classes, chance 33%: the probe on the encoder's features separates them
    assert 60 < lin["linear_val"] <= 100
    assert sweep.main(["--table", "--out", str(out)]) == 0
    assert "linear (val) |" in capsys.readouterr().out

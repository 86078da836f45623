"""A new run in a directory that held one (``--overwrite``) starts clean of the old run's files and only
of those: no old metrics for the verdict to read, no old numbered checkpoints for rotation to keep instead
of the new ones, no old evaluation cards for a report; a user's own files stay (docs/reliability.md)."""

import json

from byol.cli import main
from byol.eval.cards import CARD_SCHEMA


def _pretrain(folder, run, tmp_path, *extra):
    return main(["pretrain", "--config", "tiny", "--data", str(folder), "--run-dir", str(run), "--set", "train.knn_every=0",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_overwrite_starts_clean_of_the_old_run_and_keeps_the_users_files(image_folder, tmp_path):
    run = tmp_path / "run"
    assert _pretrain(image_folder, run, tmp_path, "--set", "train.ckpt_every=3") == 0  # 14 steps: step 6, 9, 12 kept
    ours = {"notes.txt": "my notes", "checkpoints/backup-by-hand.pt": "mine", "tb/README": "mine",
            "eval/notes.md": "mine"}
    (run / "eval").mkdir()
    for name, text in ours.items():
        (run / name).write_text(text)
    (run / "eval" / "linear-imgs.json").write_text(json.dumps({"schema": CARD_SCHEMA, "protocol": "linear"}))
    (run / "eval" / "finetune-imgs.json").write_text(json.dumps({"schema": CARD_SCHEMA, "protocol": "finetune"}))
    (run / "eval" / "labels-finetune-imgs-seed0.json").write_text(json.dumps({"labeled": [1, 2]}))
    (run / "eval" / "features").mkdir()
    (run / "eval" / "features" / "imgs-train-16px-0123456789abcdef.npy").write_bytes(b"old features")
    (run / "eval" / "features" / "imgs-train-16px-0123456789abcdef.json").write_text("{}")
    with open(run / "metrics.jsonl", "a") as fh:  # the old run's collapse reading, for the verdict to trust
        fh.write(json.dumps({"step": 99, "z_std": 0.0, "collapse_warning": True}) + "\n")

    assert _pretrain(image_folder, run, tmp_path, "--overwrite", "--set", "train.ckpt_every=2",
                     "--set", "train.epochs=1") == 0  # 7 steps: step 2, 4, 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 7 and steps == sorted(steps)  # the new run's records alone
    assert sorted(p.name for p in (run / "checkpoints").glob("step*.pt")) == [
        "step0000002.pt", "step0000004.pt", "step0000006.pt"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 7
    for name, text in ours.items():
        assert (run / name).read_text() == text
    left = sorted(str(p.relative_to(run / "eval")) for p in (run / "eval").rglob("*") if p.is_file())
    # the old encoder's card and label subset are gone; the feature cache, keyed by the weights, stays
    assert "linear-imgs.json" not in left and "finetune-imgs.json" not in left, left
    assert left == ["features/imgs-train-16px-0123456789abcdef.json", "features/imgs-train-16px-0123456789abcdef.npy",
                    "notes.md"]

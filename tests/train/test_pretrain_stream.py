"""Pretraining on the streaming data path end to end: the CLI trains through DataLoader workers, and an
interrupted streamed run resumed from its checkpoint ends bitwise equal to an uninterrupted one."""

import json

import pytest

from byol.run.checkpoints import read_checkpoint
from byol.cli import main
from byol.train.loop import Trainer


def _run(args):
    return main([str(a) for a in args])


def _args(folder, run, tmp_path, *extra):
    return ["pretrain", "--config", "tiny", "--data", folder, "--run-dir", run, "--set", "data.stream=on",
            "--set", "data.image_size=16", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.epochs=2",
            "--set", "train.ckpt_every=4", "--threads", 1, *extra]


def test_pretrain_streams_through_the_cli_and_resumes_bitwise(image_folder, tmp_path, monkeypatch, capsys,
                                                              resume_checks):
    full = tmp_path / "full"
    assert _run(_args(image_folder, full, tmp_path)) == 0
    summary = json.loads((full / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["steps"] == 2 * (120 // 16)
    assert any("knn_top1" in h for h in summary["history"]) and "encoder_knn" in summary["verdict"]
    assert "stream: 'on'" in (full / "config.yaml").read_text()
    assert "broken.png\tnot an image" in (full / "skipped_files.txt").read_text()
    assert "skipped 1 file(s) (1 not an image): class0/broken.png" in capsys.readouterr().err

    # the same run, stopped after step 5 (as Ctrl-C does: at the step boundary, last.pt saved) ...
    step = Trainer._optimizer_step

    def stop_after_five(self, micro_batches):
        out = step(self, micro_batches)
        if self.state.step == 5:
            self.request_stop()
        return out

    part = tmp_path / "part"
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_optimizer_step", stop_after_five)
        assert _run(_args(image_folder, part, tmp_path)) == 0
    assert read_checkpoint(part / "checkpoints" / "last.pt")["state"]["step"] == 5
    # ... and resumed: same crops (seed, epoch, index), same draws (the checkpointed generator)
    offset = resume_checks.metrics_size(part)
    assert _run(["pretrain", "--resume", part]) == 0
    # the resumed process started at step 5 (logs every 2 steps: its first row is step 6; from scratch: 2)
    assert resume_checks.first_logged_step(part, offset) == 6
    a, b = (read_checkpoint(r / "checkpoints" / "last.pt") for r in (full, part))
    assert b["state"]["step"] == a["state"]["step"] == 14
    resume_checks.assert_same_training_state(a, b)  # weights, optimizer, random states, loop position


@pytest.mark.parametrize("setting", ["data.stream=off", "data.stream=auto"])
def test_small_folders_keep_the_cache(image_folder, tmp_path, setting):
    run = tmp_path / "run"
    assert _run(["pretrain", "--config", "tiny", "--data", image_folder, "--run-dir", run, "--set", setting,
                 "--set", "train.epochs=0.5", "--set", "train.knn_every=0", "--set", "train.verdict=false",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--threads", 1]) == 0
    assert "stream: 'off'" in (run / "config.yaml").read_text()
    assert any((tmp_path / "cache" / "images").iterdir())  # decoded once into the cache, as before

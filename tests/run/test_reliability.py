"""Checkpoints that survive failed writes, are verified on load and never run code; the run-directory lock;
resume refusing a changed config; numerical faults that stop a run without saving (docs/reliability.md)."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from byol.run import checkpoints
from byol.run.checkpoints import CheckpointError, read_checkpoint, run_lock, save_checkpoint
from byol.cli import main


def _run(args):
    return main([str(a) for a in args])


def _state(step):
    return {"method": {"w": torch.full((1000,), float(step))}, "state": {"step": step}}


def _failing_writes(monkeypatch, after, exc):
    """``checkpoints._write_bytes`` works ``after`` times, then writes half of its data and raises ``exc``."""
    real, calls = checkpoints._write_bytes, {"n": 0}

    def write(fh, data):
        calls["n"] += 1
        if calls["n"] <= after:
            return real(fh, data)
        fh.write(bytes(data[: len(data) // 2]))
        raise exc

    monkeypatch.setattr(checkpoints, "_write_bytes", write)


def test_a_save_interrupted_mid_write_leaves_last_pt_loadable(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(_state(3), last)
    _failing_writes(monkeypatch, 1, RuntimeError("killed mid-write"))  # the digest is written, the data half
    with pytest.raises(RuntimeError, match="mid-write"):
        save_checkpoint(_state(6), last)
    assert read_checkpoint(last)["state"]["step"] == 3
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "last.pt.sha256"]  # no temp files left


def test_a_full_disk_is_a_one_line_error_and_last_pt_stays(image_folder, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _failing_writes(monkeypatch, 4, OSError(errno.ENOSPC, "No space left on device"))  # the step-3 save works
    assert _run(["pretrain", "--config", "tiny", "--data", image_folder, "--run-dir", run, "--set", "train.ckpt_every=3",
                 "--set", "train.knn_every=0", "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the one line about the folder's broken file
    assert err.startswith("byol: error: cannot write") and "no space left" in err
    assert err.endswith(f"the last good checkpoint is {run / 'checkpoints' / 'last.pt'}")  # the step-3 one, intact
    assert read_checkpoint(run / "checkpoints" / "last.pt")["state"]["step"] == 3


def test_a_full_disk_on_a_new_numbered_checkpoint_leaves_no_orphan_digest(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    save_checkpoint(_state(3), d / "last.pt", d / checkpoints.numbered_name(3))
    # last.pt's digest and data are written, then step0000006.pt's digest; its data meets the full disk
    _failing_writes(monkeypatch, 3, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointError, match="no space left"):
        save_checkpoint(_state(6), d / "last.pt", d / checkpoints.numbered_name(6))
    assert sorted(p.name for p in d.iterdir()) == ["last.pt", "last.pt.sha256", "step0000003.pt",
                                                   "step0000003.pt.sha256"]  # no step0000006.pt.sha256 alone
    assert read_checkpoint(d / "last.pt")["state"]["step"] == 6
    assert checkpoints.last_good(d) == d / "step0000003.pt"


def test_a_damaged_checkpoint_is_refused_naming_the_last_good_one(tmp_path):
    d = tmp_path / "checkpoints"
    for step in (3, 6):
        save_checkpoint(_state(step), d / "last.pt", d / checkpoints.numbered_name(step))
    data = bytearray((d / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the middle of a tensor: torch.load alone would not notice
    (d / "last.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(d / "last.pt")
    assert str(e.value) == f"checkpoint {d / 'last.pt'} is damaged (sha256 mismatch); the last good checkpoint is " \
                           f"{d / 'step0000006.pt'}"
    (d / "step0000006.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="size 9 bytes.*step0000003.pt"):
        read_checkpoint(d / "step0000006.pt")


def test_numbered_checkpoints_keep_the_newest_n(tmp_path):
    d = tmp_path / "checkpoints"
    for step in range(1, 6):
        save_checkpoint(_state(step), d / checkpoints.numbered_name(step))
        checkpoints.rotate(d, 3)
    assert sorted(p.name for p in d.glob("step*")) == [f"step000000{i}.pt{s}" for i in (3, 4, 5) for s in ("", ".sha256")]


class _Evil:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted(path, marker, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload(_Evil(marker)), path)
    return path


@pytest.mark.parametrize("how", ["resume", "eval-checkpoint", "weights"])
def test_a_crafted_pickle_is_refused_and_runs_nothing(how, image_folder, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    if how == "resume":
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"model": {"backbone": "convnet"}}))
        _crafted(run / "checkpoints" / "last.pt", marker, lambda e: {"method": {}, "state": e})
        args = ["pretrain", "--resume", run]
    elif how == "eval-checkpoint":
        ckpt = _crafted(tmp_path / "x.pt", marker, lambda e: {"method": {}, "config": e})
        args = ["eval", "knn", "--checkpoint", ckpt, "--dataset", image_folder, "--cache-dir", tmp_path / "c"]
    else:
        w = _crafted(tmp_path / "w.pt", marker, lambda e: {"fc.weight": e})
        args = ["eval", "knn", "--torchvision", "resnet18", "--weights", w, "--dataset", image_folder,
                "--cache-dir", tmp_path / "c", "--out-dir", tmp_path / "o"]
    assert _run(args) == 2
    err = capsys.readouterr().err.strip()
    assert "refused" in err and "could run code" in err and "\n" not in err
    assert not marker.exists()


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_process_in_the_same_run_dir_is_refused(image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{other.pid}\n")
        assert _run(["pretrain", "--config", "tiny", "--data", image_folder, "--run-dir", run]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"byol: error: {run} is in use by process {other.pid} (lock {run / '.lock'}); wait for it " \
                      "to end or use another --run-dir"
        assert not (run / "config.yaml").exists()
    finally:
        other.kill()
        other.wait()


def test_a_stale_lock_is_taken_over_and_released(tmp_path):
    (tmp_path / ".lock").write_text(f"{_dead_pid()}\n")
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().split() == [str(os.getpid())]
    assert not (tmp_path / ".lock").exists()


@pytest.fixture
def finished_run(image_folder, tmp_path):
    run = tmp_path / "run"
    assert _run(["pretrain", "--config", "tiny", "--data", image_folder, "--run-dir", run, "--set", "train.epochs=1",
                 "--set", "train.knn_every=0", "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    return run


def test_resume_refuses_changes_that_alter_the_result_and_allows_safe_ones(finished_run, capsys):
    run, metrics = finished_run, (finished_run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert _run(["pretrain", "--resume", run]) == 0
    assert capsys.readouterr().out.strip() == f"{run} already finished (7 steps): nothing to train"
    assert _run(["pretrain", "--resume", run, "--set", "optim.base_lr=0.9", "--set", "train.budget=20m",
                 "--allow-changes"]) == 2
    err = capsys.readouterr().err
    assert "--resume refused: optim.base_lr (0.5 -> 0.9) differ" in err and "train.budget" not in err
    assert _run(["pretrain", "--resume", run, "--set", "train.budget=20m"]) == 2
    assert "train.budget (None -> '20m') differ from the run's checkpoint; pass --allow-changes" in capsys.readouterr().err
    assert _run(["pretrain", "--resume", run, "--set", "train.budget=20m", "--allow-changes"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["method"]["tau_base"] = 0.5  # an edited config.yaml is a change too
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert _run(["pretrain", "--resume", run]) == 2
    assert "method.tau_base (0.99 -> 0.5)" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == metrics  # nothing was trained by any of these
    assert json.loads((run / "summary.json").read_text())["steps"] == 7


def test_a_checkpoint_written_before_digests_still_loads(tmp_path):
    torch.save(_state(4), tmp_path / "last.pt")  # how byol wrote checkpoints before: plain torch.save, no digest
    assert read_checkpoint(tmp_path / "last.pt")["state"]["step"] == 4


def test_the_resume_check_ignores_values_left_to_be_resolved_from_the_data():
    from byol.errors import ConfigError
    from byol.run.resume import check_resume_config

    stored = {"data": {"mean": [0.5], "source": "x"}, "optim": {"base_lr": 0.5}}
    assert check_resume_config(stored, {"data": {"mean": None, "source": "x"}, "optim": {"base_lr": 0.5}}, False) == []
    with pytest.raises(ConfigError, match=r"data.mean \(\[0.5\] -> \[0.4\]\)"):
        check_resume_config(stored, {"data": {"mean": [0.4], "source": "x"}, "optim": {"base_lr": 0.5}}, True)


def test_a_junk_folder_trains_with_one_plain_line_and_skipped_files_txt(junk_folder, tmp_path, capsys):
    root, expect = junk_folder
    run = tmp_path / "run"
    assert _run(["pretrain", "--config", "tiny", "--data", root, "--image-size", 16, "--run-dir", run,
                 "--set", "train.epochs=1", "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "skipped" in ln]
    assert len(lines) == 1 and lines[0].startswith("byol: warning: ") and "Warning" not in err and ".py:" not in err
    assert f"{expect['used']} images; skipped {len(expect['skipped'])} file(s)" in lines[0]
    listed = (run / "skipped_files.txt").read_bytes().splitlines()
    assert sorted(listed) == sorted(f"{f}\t{why}".encode("utf-8", "surrogateescape") for f, why in expect["skipped"].items())
    assert b"b/\xff\xfe.jpg\tempty file" in listed  # the name's own bytes
    assert json.loads((run / "summary.json").read_text())["steps"] > 0


@pytest.mark.parametrize("args, says", [
    (["--budget", "0.01s"], "too short to train anything"),
    (["--set", "optim.base_lrr=0.1"], "did you mean 'optim.base_lr'?"),
    (["--set", "optim.base_lr=-1"], "optim.base_lr must be positive"),
    (["--set", "optim.batch_size=0"], "optim.batch_size must be a positive"),
    (["--budget", "0s"], "train.budget: duration must be positive"),
    (["--data", "cifar1O"], "did you mean 'cifar10'?"),
    (["--data", "cifar10", "--data-dir", "/nonexistent/cifar"], "cifar10 not found: no cifar-10-batches-py/ in"),
], ids=["budget-under-one-step", "unknown-key", "negative-lr", "batch-0", "budget-0", "dataset-typo", "missing-data-set"])
def test_a_user_mistake_is_one_line_and_writes_no_checkpoint(args, says, image_folder, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["pretrain", "--config", "tiny", "--data", image_folder, "--run-dir", run, "--set", f"data.cache_dir={tmp_path}"]
    assert _run(base + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("byol: error: ") and says in err[-1], err
    assert not any(ln.startswith("Traceback") for ln in err)
    assert not (run / "checkpoints" / "last.pt").exists()

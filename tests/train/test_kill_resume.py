"""A pretraining run in a subprocess, killed and resumed: SIGKILL at 5 seeded random steps ends bitwise equal
to an uninterrupted run (weights, optimizer, random states), each resumed process starting at its checkpoint's
step; SIGTERM, SIGINT and SIGUSR1 save and exit cleanly, and the resume continues (docs/reliability.md)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import byol.train.pretrain  # noqa: F401 - imported before the subprocess starts, so main() answers at once
from byol.run.checkpoints import read_checkpoint
from byol.cli import main

#: runs ``byol`` with each optimizer step slowed by 30 ms, so a test can signal it mid-run (same results)
_RUNNER = """
import sys, time
import byol.train.loop as engine
step = engine.Trainer._optimizer_step
def slow(self, micro_batches):
    time.sleep(0.03)
    return step(self, micro_batches)
engine.Trainer._optimizer_step = slow
from byol.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _args(image_folder, tmp_path, epochs=6):
    return ["--config", "tiny", "--data", str(image_folder), "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--set", f"train.epochs={epochs}", "--set", "train.ckpt_every=3", "--set", "train.log_every=1",
            "--set", "train.knn_every=0", "--set", "train.threads=1", "--no-progress"]


def _start(tmp_path, args):
    runner = tmp_path / "runner.py"
    runner.write_text(_RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(runner), *map(str, args)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _steps(run):
    f = run / "metrics.jsonl"
    text = f.read_text() if f.exists() else ""
    lines = text.split("\n")[:-1]  # complete lines only: the trainer may be writing the last one right now
    return max((json.loads(line)["step"] for line in lines if '"loss"' in line), default=0)


def _wait_for_step(proc, run, step, timeout=120.0):
    end = time.monotonic() + timeout
    while _steps(run) < step:
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < end, f"no step {step} after {timeout} s"
        time.sleep(0.005)


def _last(run):
    return read_checkpoint(run / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_sigkill_at_five_random_steps_then_resume_is_bitwise_identical(image_folder, tmp_path, resume_checks):
    args = _args(image_folder, tmp_path)
    full, run = tmp_path / "full", tmp_path / "killed"
    assert main(["pretrain", *args, "--run-dir", str(full)]) == 0
    total = json.loads((full / "summary.json").read_text())["steps"]  # 6 epochs of 7 steps
    rng, resumes = random.Random(1234), []  # (metrics.jsonl offset, checkpoint step) at each resume
    proc = _start(tmp_path, ["pretrain", *args, "--run-dir", run])
    for _ in range(5):
        target = _steps(run) + rng.randint(1, 6)  # first kill after the step-3 checkpoint at the earliest
        _wait_for_step(proc, run, max(target, 4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert _steps(run) < total, "killed after the end: the test no longer tests anything"
        resumes.append((resume_checks.metrics_size(run), _last(run)["state"]["step"]))
        proc = _start(tmp_path, ["pretrain", "--resume", run])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert len(resumes) == 5 and json.loads((run / "summary.json").read_text())["steps"] == total
    # each resumed process started at its checkpoint's step (a resume that retrained from 0 logs step 1 first)
    started = [resume_checks.first_logged_step(run, offset) for offset, _ in resumes]
    assert started == [step + 1 for _, step in resumes] and all(step >= 3 for _, step in resumes), resumes
    resume_checks.assert_same_training_state(_last(full), _last(run))  # weights, optimizer, random states


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_stop_signal_saves_and_exits_then_the_resume_continues(sig, image_folder, tmp_path, capsys, resume_checks):
    run = tmp_path / "run"
    # 30 epochs (210 steps, over 6 s): the run is still going when the second process and the signal come
    proc = _start(tmp_path, ["pretrain", *_args(image_folder, tmp_path, epochs=30), "--run-dir", run])
    _wait_for_step(proc, run, 5)
    assert main(["pretrain", "--resume", str(run)]) == 2  # a second process in the same run dir is refused
    assert f"in use by process {proc.pid}" in capsys.readouterr().err
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "interrupted at step" in out
    stopped = read_checkpoint(run / "checkpoints" / "last.pt")["state"]
    assert 5 <= stopped["step"] < stopped["total_steps"] and not stopped["finished"]
    assert not (run / ".lock").exists()  # released on exit
    offset = resume_checks.metrics_size(run)
    assert main(["pretrain", "--resume", str(run)]) == 0
    done = read_checkpoint(run / "checkpoints" / "last.pt")["state"]
    assert done["finished"] and done["step"] == done["total_steps"] > stopped["step"]
    assert resume_checks.first_logged_step(run, offset) == stopped["step"] + 1  # continued, not retrained

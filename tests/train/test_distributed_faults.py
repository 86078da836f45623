"""Nothing hangs, nothing lies, with several processes (issue 26): each fault of multi-process training is
injected in 2 gloo processes (tests/train/ddp_worker.py), which must end, agree, and write what one process would.

Every test is bounded by :func:`launch`'s timeout: a hang fails the test instead of blocking CI.
"""

import json
import os
import subprocess
import sys

import pytest

from byol.config import find_preset
from byol.run.checkpoints import read_checkpoint
from byol.train.config import build_config
from byol.train.pretrain import run_pretrain

from test_distributed import SRC, _free_port, _overrides, _relative_differences, launch

pytestmark = pytest.mark.slow
TIMEOUT = 180  # seconds: these runs take about 20 s each on 2 busy cores


def _reports(tmp_path) -> list[dict]:
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def _short(image_folder, tmp_path, **extra) -> list[str]:
    return _overrides(image_folder, tmp_path, **{"train.epochs": 1, "optim.accum_steps": 1, "train.verdict": "false",
                                                 **extra})


def test_an_eval_split_no_rank_can_load_ends_on_every_rank(image_folder, tmp_path):
    """``data.eval_split: val`` without a val split: rank 0's failure is every rank's (no barrier skipped),
    and all of them fall back to queries held out of train, as one process does."""
    launch(tmp_path, tmp_path / "two", _short(image_folder, tmp_path, **{"data.eval_split": "val"}), timeout=TIMEOUT)
    reports = _reports(tmp_path)
    assert [r["stop_reason"] for r in reports] == ["completed", "completed"]
    knn = [[h["knn_top1"] for h in r["history"]] for r in reports]
    assert knn[0] and knn[0] == knn[1]


def test_a_signal_right_after_the_stop_agreement_stops_every_rank_at_the_same_step(image_folder, tmp_path):
    """Rank 1 is signalled between step 3's agreement and the loop's check: it must not leave alone (the
    other rank would hang in its next collective); both stop at the next agreement, after step 4."""
    launch(tmp_path, tmp_path / "two", _short(image_folder, tmp_path), timeout=TIMEOUT,
           scenario="signal_after_agreement")
    reports = _reports(tmp_path)
    assert [r["steps"] for r in reports] == [4, 4]
    assert [r["stop_reason"] for r in reports] == ["interrupted at step 4"] * 2
    assert read_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["state"]["step"] == 4


@pytest.mark.parametrize("where", ["checkpoint_check", "final_save"])
def test_a_ranks_own_first_signal_after_an_agreed_stop_is_a_first_signal(image_folder, tmp_path, where):
    """Rank 0's signal stops every rank after step 3; rank 1's own first signal, arriving after that agreement
    (in step 3's checkpoint check, or in the final save), asks for the same stop: no KeyboardInterrupt and no
    default signal action (only a second signal to the same process stops it at once)."""
    launch(tmp_path, tmp_path / "two", _short(image_folder, tmp_path), timeout=TIMEOUT,
           scenario=f"own_signal_in_{where}")
    reports = _reports(tmp_path)
    assert [r["stop_reason"] for r in reports] == ["interrupted at step 3"] * 2
    assert read_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["state"]["step"] == 3


def test_streamed_skipped_files_are_written_by_rank0_with_every_ranks_files(image_folder, tmp_path):
    """Unreadable files met while streaming, by either rank: rank 0 alone writes ``skipped_files.txt``, and it
    lists all of them (not the last writer's shard)."""
    broken = {f"class{c}/bad{i}.png" for c in range(3) for i in range(2)} | {"class0/broken.png"}
    for name in broken:
        (image_folder / name).write_bytes(b"not an image either")
    overrides = _short(image_folder, tmp_path, **{"data.stream": "on", "data.workers": 0, "train.epochs": 3,
                                                 "train.knn_every": 0})
    launch(tmp_path, tmp_path / "two", overrides, timeout=TIMEOUT, scenario="small_stream_sample")
    reports = _reports(tmp_path)
    assert reports[1]["writes"] == []
    listed = (tmp_path / "two" / "skipped_files.txt").read_text().splitlines()
    assert {line.split("\t")[0] for line in listed} == broken


def test_a_knn_monitor_smaller_than_the_processes_is_computed_by_all(image_folder, tmp_path):
    """One kNN query for 2 processes: no rank gets an empty shard and raises alone; all report one accuracy."""
    launch(tmp_path, tmp_path / "two", _short(image_folder, tmp_path, **{"data.knn_queries": 1}), timeout=TIMEOUT)
    reports = _reports(tmp_path)
    knn = [[h["knn_top1"] for h in r["history"]] for r in reports]
    assert knn[0] and knn[0] == knn[1] and set(knn[0]) <= {0.0, 100.0}


def test_byol_negatives_are_gathered_from_every_process(image_folder, tmp_path):
    """BYOL with App. I's negative term (``method.negative_weight``) over 2 processes trains like one process:
    the negatives come from the global batch, as SimCLR's."""
    overrides = _short(image_folder, tmp_path, **{"method.negative_weight": 0.5, "train.knn_every": 0})
    launch(tmp_path, tmp_path / "two", overrides, timeout=TIMEOUT)
    run_pretrain(build_config(files=[find_preset("tiny")], overrides=overrides), tmp_path / "one")
    single = read_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["method"]
    double = read_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["method"]
    overall, worst = _relative_differences(single, double)
    assert overall <= 1e-4 and worst <= 1e-3, (overall, worst)


def test_torchrun_dash_m_byol_says_things_once_and_warns_nothing_spurious(image_folder, tmp_path):
    """``torchrun -m byol pretrain`` without --config: rank 0 alone prints the preset line, runpy does not warn
    (``python -m byol``), and DDP's FutureWarning about ``broadcast_buffers`` is avoided at its cause."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BYOL_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "byol", "pretrain", "--data",
           str(image_folder), "--run-dir", str(tmp_path / "run"), "--no-progress", "--threads", "1",
           "--set", "data.image_size=16", "--set", "train.epochs=0.5", "--set", "train.knn_every=0",
           "--set", "train.verdict=false", "--set", "optim.batch_size=16"]
    try:
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not end within {TIMEOUT} s (a hang)")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert out.count("no --config: using the 'folder' preset") == 1, out
    assert "RuntimeWarning" not in out and "FutureWarning" not in out, out
    assert out.count("done: ") == 1

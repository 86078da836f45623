"""byol.reproduce.pool: at most ``jobs`` calls submitted, so a failure or Ctrl-C starts no further call."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

from byol.reproduce.pool import run_bounded


def test_every_call_runs_once_and_reports_its_own_result():
    seen: list[tuple[str, int]] = []
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        run_bounded(pool, ((k, lambda x: x * x, (i,)) for i, k in enumerate("abcde")), 2,
                    lambda k, r: seen.append((k, r)))
    assert sorted(seen) == [("a", 0), ("b", 1), ("c", 4), ("d", 9), ("e", 16)]


def test_no_more_than_jobs_calls_run_at_once():
    lock, now, peak = threading.Lock(), [0], [0]

    def work(_: int) -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.02)
        with lock:
            now[0] -= 1

    with cf.ThreadPoolExecutor(max_workers=4) as pool:  # the pool could run 4; run_bounded allows 2
        run_bounded(pool, ((i, work, (i,)) for i in range(8)), 2, lambda k, r: None)
    assert peak[0] == 2


class _Counting(cf.ThreadPoolExecutor):
    """A thread pool that remembers what was submitted to it."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers)
        self.submitted: list[str] = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(getattr(fn, "__name__", "?"))
        return super().submit(fn, *args, **kwargs)


def test_a_failed_call_leaves_no_call_queued_and_waits_for_the_running_one():
    """The interrupt path. A process pool moves submitted calls into its workers' queue where
    ``cancel_futures`` cannot reach them: with every call submitted up front, Ctrl-C of ``reproduce --jobs 2``
    let the pool start the next cell. Here only the running calls were ever submitted."""
    b_running, b_finished = threading.Event(), threading.Event()

    def fail() -> None:
        b_running.wait(5)
        raise RuntimeError("interrupted")

    def slow() -> None:
        b_running.set()
        time.sleep(0.3)
        b_finished.set()

    def queued() -> None:
        pass

    pool = _Counting(2)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_bounded(pool, iter([("a", fail, ()), ("b", slow, ()), ("c", queued, ()), ("d", queued, ())]), 2,
                    lambda k, r: None)
    assert b_finished.is_set()  # the running call finished (a cell saves at its step boundary)
    assert pool.submitted == ["fail", "slow"]

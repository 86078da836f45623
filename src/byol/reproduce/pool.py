"""Run calls on an executor at most ``jobs`` at a time, so that an interrupt leaves nothing queued.

``concurrent.futures.ProcessPoolExecutor`` moves one call more than it has workers into its call queue, and
``shutdown(cancel_futures=True)`` cannot cancel that one: after a Ctrl-C stopped the running cells of a sweep,
the pool started the next queued cell (seen with ``byol reproduce --jobs 2``). Submitting a call only when a
slot frees means there is never a queued call to start.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

K = TypeVar("K")


def run_bounded(executor: cf.Executor, calls: Iterable[tuple[K, Callable[..., Any], tuple[Any, ...]]], jobs: int,
                on_done: Callable[[K, Any], None]) -> None:
    """Submit ``calls`` (key, function, args), in order, keeping at most ``jobs`` of them submitted;
    ``on_done(key, result)`` as each finishes (in the main process). The first exception (a failed call's, or
    a KeyboardInterrupt while waiting) shuts the executor down, waiting for the running calls (a cell stops at
    its step boundary and saves), and is raised; no further call starts."""
    pending = iter(calls)
    running: dict[cf.Future, K] = {}

    def submit_next() -> None:
        call = next(pending, None)
        if call is not None:
            key, fn, args = call
            running[executor.submit(fn, *args)] = key

    try:
        for _ in range(max(1, jobs)):
            submit_next()
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                key = running.pop(fut)
                on_done(key, fut.result())
                submit_next()
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise

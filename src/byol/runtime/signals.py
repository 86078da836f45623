"""Stop requests from signals: SIGINT (Ctrl-C), SIGTERM and SIGUSR1 (SLURM's pre-emption warning)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: the signals that ask a training run to save and stop at the next step boundary
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)


@contextmanager
def stop_on_signals(requested: Callable[[], bool], request: Callable[[], None]) -> Iterator[None]:
    """While inside: the first stop signal calls ``request()`` (stop cleanly at the step boundary); one
    arriving when ``requested()`` is already true raises KeyboardInterrupt (stop at once)."""
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if requested():
            raise KeyboardInterrupt
        request()

    if threading.current_thread() is threading.main_thread():  # signals can only be set there
        for sig in STOP_SIGNALS:
            try:
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)

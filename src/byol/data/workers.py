"""Decoding many files into one uint8 array, in worker processes when there are many.

Small images are bound by per-file Python overhead, not by the codec, so threads gain nothing under the
GIL; worker processes do. Each worker opens the folder or zip once (its initializer) and returns decoded
chunks, which the parent writes into the output array (possibly a memory-mapped cache file). Short lists
are decoded in-process: starting workers would cost more than it saves.

Workers are started with the ``spawn`` method (safe with a multi-threaded parent, same on every OS);
they import only this module's light dependencies (numpy, PIL), not torch.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from byol.data import decode
from byol.data.decode import DecodeReport
from byol.data.archive import FileStore, open_store
from byol.errors import DataError

# Below this many files, decode in the calling process.
POOL_MIN_FILES = 2048
_CHUNK_BYTES = 8 << 20  # decoded bytes per task, so large images travel in modest pieces
_CHUNK_FILES = (16, 1024)  # but at least / at most this many files per task

_worker_store: FileStore | None = None


class Journal(Protocol):
    """Where finished chunks are recorded, so an interrupted decode resumes without redoing them."""

    def done(self) -> dict[int, DecodeReport]: ...  # chunk start -> its report

    def record(self, start: int, report: DecodeReport) -> None: ...  # called once the rows are written


def _init_worker(root: str) -> None:
    global _worker_store
    _worker_store = open_store(Path(root))


def read_error(exc: OSError) -> str:
    """The skip reason of a file that could not be read (the reasons a folder's report counts)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "broken symlink" if exc.strerror == "broken symlink" else "missing"
    return f"unreadable ({exc.strerror or exc.__class__.__name__})"


def _decode_span(
    store: FileStore, files: Sequence[str], shape: tuple[int, int, int], image_size: int | None
) -> tuple[np.ndarray, DecodeReport]:
    """Decode ``files`` into a new ``[len(files), *shape]`` array; returns it and what failed or converted."""
    channels, height, width = shape
    out = np.zeros((len(files), channels, height, width), dtype=np.uint8)
    report = DecodeReport()
    for i, name in enumerate(files):
        try:
            arr, notes = decode.decode_noted(store.read(name), channels, image_size)
        except decode.UnreadableImage as exc:
            report.failed[i] = exc.reason
            continue
        except (OSError, KeyError) as exc:
            report.failed[i] = read_error(exc) if isinstance(exc, OSError) else "missing from the archive"
            continue
        if arr.shape[1:] != (height, width):
            raise DataError(
                f"images differ in size: {name} is {arr.shape[1]}x{arr.shape[2]} but others are "
                f"{height}x{width}; pass --image-size N to resize them all to NxN"
            )
        out[i] = arr
        report.converted.update(notes)
    return out, report


def _worker_task(
    files: Sequence[str], shape: tuple[int, int, int], image_size: int | None
) -> tuple[np.ndarray, DecodeReport]:
    assert _worker_store is not None, "worker not initialised"
    return _decode_span(_worker_store, files, shape, image_size)


def chunk_size(shape: tuple[int, ...]) -> int:
    """Files per task for images of ``shape`` (C, H, W): about ``_CHUNK_BYTES`` of decoded pixels."""
    return max(_CHUNK_FILES[0], min(_CHUNK_FILES[1], _CHUNK_BYTES // max(1, int(np.prod(shape)))))


def decode_into(
    out: np.ndarray,
    files: Sequence[str],
    store: FileStore,
    *,
    image_size: int | None,
    workers: int,
    progress: bool,
    desc: str,
    journal: Journal | None = None,
) -> DecodeReport:
    """Decode ``files[i]`` of ``store`` into ``out[i]`` (uint8 ``[N, C, H, W]``).

    Returns the files that could not be read or decoded (their rows are zero), with reasons, and the
    conversions. With a ``journal``, chunks it lists as done are skipped (their reports reused) and each
    newly finished chunk is recorded. At most ``2 x workers`` chunks are in flight, so memory stays bounded
    (about ``2 x workers x _CHUNK_BYTES``) whatever the number of files.
    Raises DataError if, without ``image_size``, an image's size differs from ``out``'s.
    """
    n = len(files)
    shape = tuple(out.shape[1:])
    chunk = chunk_size(shape)
    report = DecodeReport()
    finished = journal.done() if journal is not None else {}
    todo = [s for s in range(0, n, chunk) if s not in finished]
    for start, part in finished.items():
        report.add(start, part)
    bar = tqdm(total=n, initial=n - sum(min(chunk, n - s) for s in todo), desc=desc, unit="img",
               disable=not progress, leave=False)

    def take(start: int, part: np.ndarray, part_report: DecodeReport) -> None:
        out[start : start + len(part)] = part
        report.add(start, part_report)
        if journal is not None:
            journal.record(start, part_report)
        bar.update(len(part))

    try:
        if workers <= 1 or len(todo) * chunk < POOL_MIN_FILES:
            for start in todo:
                take(start, *_decode_span(store, files[start : start + chunk], shape, image_size))  # type: ignore[arg-type]
            return report
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(str(store.root),)) as pool:
            pending: dict[Future, int] = {}
            queue = iter(todo)
            try:
                while True:
                    for start in itertools.islice(queue, max(0, 2 * workers - len(pending))):
                        pending[pool.submit(_worker_task, files[start : start + chunk], shape, image_size)] = start
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        take(pending.pop(fut), *fut.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return report
    finally:
        bar.close()

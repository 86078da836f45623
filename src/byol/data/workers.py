"""Decoding many files into one uint8 array, in worker processes when there are many.

Small images are bound by per-file Python overhead, not by the codec, so threads gain nothing under the
GIL; worker processes do. Each worker opens the folder or zip once (its initializer) and returns decoded
chunks, which the parent writes into the output array (possibly a memory-mapped cache file). Short lists
are decoded in-process: starting workers would cost more than it saves.

Workers are started with the ``spawn`` method (safe with a multi-threaded parent, same on every OS);
they import only this module's light dependencies (numpy, PIL), not torch.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from byol.data import decode
from byol.data.archive import FileStore, open_store
from byol.errors import DataError

# Below this many files, decode in the calling process.
POOL_MIN_FILES = 2048
_CHUNK_BYTES = 8 << 20  # decoded bytes per task, so large images travel in modest pieces
_CHUNK_FILES = (16, 1024)  # but at least / at most this many files per task

_worker_store: FileStore | None = None


def _init_worker(root: str) -> None:
    global _worker_store
    _worker_store = open_store(Path(root))


def _decode_span(
    store: FileStore, files: Sequence[str], shape: tuple[int, int, int], image_size: int | None
) -> tuple[np.ndarray, list[int]]:
    """Decode ``files`` into a new ``[len(files), *shape]`` array; returns it and the failed positions."""
    channels, height, width = shape
    out = np.zeros((len(files), channels, height, width), dtype=np.uint8)
    failed: list[int] = []
    for i, name in enumerate(files):
        try:
            arr = decode.decode_image(store.read(name), channels, image_size)
        except (decode.UnreadableImage, OSError, KeyError):
            failed.append(i)
            continue
        if arr.shape[1:] != (height, width):
            raise DataError(
                f"images differ in size: {name} is {arr.shape[1]}x{arr.shape[2]} but others are "
                f"{height}x{width}; pass --image-size N to resize them all to NxN"
            )
        out[i] = arr
    return out, failed


def _worker_task(
    files: Sequence[str], shape: tuple[int, int, int], image_size: int | None
) -> tuple[np.ndarray, list[int]]:
    assert _worker_store is not None, "worker not initialised"
    return _decode_span(_worker_store, files, shape, image_size)


def decode_into(
    out: np.ndarray,
    files: Sequence[str],
    store: FileStore,
    *,
    image_size: int | None,
    workers: int,
    progress: bool,
    desc: str,
) -> list[int]:
    """Decode ``files[i]`` of ``store`` into ``out[i]`` (uint8 ``[N, C, H, W]``).

    Returns the sorted indices of files that could not be read or decoded (their rows are zero).
    Raises DataError if, without ``image_size``, an image's size differs from ``out``'s.
    """
    n = len(files)
    shape = tuple(out.shape[1:])
    chunk = max(_CHUNK_FILES[0], min(_CHUNK_FILES[1], _CHUNK_BYTES // max(1, int(np.prod(shape)))))
    failed: list[int] = []
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers <= 1 or n < POOL_MIN_FILES:
            for start in range(0, n, chunk):
                part, bad = _decode_span(store, files[start : start + chunk], shape, image_size)  # type: ignore[arg-type]
                out[start : start + len(part)] = part
                failed.extend(start + b for b in bad)
                bar.update(len(part))
            return sorted(failed)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(str(store.root),)) as pool:
            futures = {pool.submit(_worker_task, files[s : s + chunk], shape, image_size): s for s in range(0, n, chunk)}
            try:
                for fut in as_completed(futures):
                    start = futures[fut]
                    part, bad = fut.result()
                    out[start : start + len(part)] = part
                    failed.extend(start + b for b in bad)
                    bar.update(len(part))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return sorted(failed)
    finally:
        bar.close()

"""The decode-once cache: a decoded image folder stored as ``images.npy`` + ``labels.npy`` + ``meta.json``.

An entry lives in ``<cache_dir>/images/<name>-<key>/`` where the key hashes the absolute source path, the
split, the requested image size and channels, and a cheap fingerprint of the source (file names, sizes and
modification times; a zip's size and mtime), so an edited source gets a new entry instead of stale pixels.

Entries are built in a temporary sibling directory and renamed into place in one step, so a run killed
half-way leaves no entry that looks complete. Leftover temporary directories of dead processes are removed
the next time the same entry is written. Old entries are never deleted automatically: remove the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from byol._proc import pid_alive

CACHE_VERSION = 1
# Images up to this size (the larger side, after resizing) are cached; larger ones are decoded every time.
MAX_CACHED_SIZE = 96

_IMAGES = "images.npy"
_LABELS = "labels.npy"
_META = "meta.json"


def default_cache_dir() -> Path:
    """``$BYOL_CACHE_DIR`` if set, else ``~/.cache/byol``."""
    env = os.environ.get("BYOL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "byol"


def cache_key(
    source: Path, split: str, image_size: int | None, channels: int | None, fingerprint: str
) -> str:
    payload = json.dumps(
        [CACHE_VERSION, str(source.resolve()), split, image_size, channels, fingerprint], separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass
class DecodedImages:
    """Decoded images with their labels and metadata (classes, paths, skipped), cached or fresh."""

    images: np.ndarray  # uint8 [N, C, H, W]; from the cache: memory-mapped, copy-on-write
    labels: np.ndarray | None
    meta: dict[str, Any]


def entry_dir(cache_root: Path, name: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "data"
    return cache_root / "images" / f"{safe}-{key}"


def read_entry(path: Path) -> DecodedImages | None:
    """The entry at ``path``, or ``None`` if absent or unusable (a damaged entry is deleted to be rebuilt)."""
    if not path.is_dir():
        return None
    try:
        meta = json.loads((path / _META).read_text())
        # Copy-on-write mapping: pages are shared with the page cache, and an accidental in-place write
        # to the tensor changes only this process's memory (a read-only mapping would segfault instead).
        images = np.load(path / _IMAGES, mmap_mode="c")
        labels = np.load(path / _LABELS) if (path / _LABELS).exists() else None
        if meta.get("version") != CACHE_VERSION or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("unexpected format")
        if labels is not None and labels.shape != (images.shape[0],):
            raise ValueError("labels do not match images")
        if len(meta.get("paths", [])) != images.shape[0]:
            raise ValueError("paths do not match images")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Entries appear only complete (atomic rename), so this one is damaged for good: drop it.
        warnings.warn(f"ignoring unreadable cache entry {path} ({exc}); decoding the images again", stacklevel=4)
        shutil.rmtree(path, ignore_errors=True)
        return None
    return DecodedImages(images=images, labels=labels, meta=meta)



def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class EntryWriter:
    """Builds an entry in a temporary directory; :meth:`commit` renames it into place atomically.

    Use as a context manager: leaving the block without committing (an exception, Ctrl-C) deletes the
    temporary directory.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        self.tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self._committed = False

    def _remove_stale_temps(self) -> None:
        for old in self.final.parent.glob(f".tmp-{self.final.name}-*"):
            try:
                pid = int(old.name[len(f".tmp-{self.final.name}-") :].split("-")[0])
            except ValueError:
                continue
            if not pid_alive(pid):
                shutil.rmtree(old, ignore_errors=True)

    def array(self, shape: tuple[int, int, int, int]) -> np.ndarray:
        """A writable memory-mapped uint8 ``images.npy`` in the temporary directory."""
        return np.lib.format.open_memmap(self.tmp / _IMAGES, mode="w+", dtype=np.uint8, shape=shape)

    def keep_rows(self, images: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Replace ``images.npy`` by its rows ``keep`` (copied in bounded chunks); returns the new array."""
        compact = np.lib.format.open_memmap(
            self.tmp / "compact.npy", mode="w+", dtype=np.uint8, shape=(len(keep), *images.shape[1:])
        )
        step = 1024
        for start in range(0, len(keep), step):
            compact[start : start + step] = images[keep[start : start + step]]
        compact.flush()
        os.replace(self.tmp / "compact.npy", self.tmp / _IMAGES)
        return compact

    def commit(self, images: np.ndarray, labels: np.ndarray | None, meta: dict[str, Any]) -> None:
        """Write labels and metadata, fsync everything and move the entry into place."""
        if isinstance(images, np.memmap):
            images.flush()
        if labels is not None:
            np.save(self.tmp / _LABELS, labels.astype(np.int64))
        (self.tmp / _META).write_text(json.dumps({"version": CACHE_VERSION, **meta}))
        for f in self.tmp.iterdir():
            _fsync_file(f)
        try:
            os.replace(self.tmp, self.final)
        except OSError:
            # Another process committed the same entry first (the target is a non-empty directory): keep theirs.
            if not self.final.is_dir():
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)
        self._committed = True

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

"""The decode-once cache: a decoded image folder stored as ``images.npy`` + ``labels.npy`` + ``meta.json``.

An entry lives in ``<cache_dir>/images/<name>-<key>/`` where the key hashes the absolute source path, the
split, the requested image size and channels, and a cheap fingerprint of the source (file names, sizes and
modification times; a zip's size and mtime), so an edited source gets a new entry instead of stale pixels.

Entries are built in a temporary sibling directory and renamed into place in one step, so a run killed
half-way leaves no entry that looks complete. A resumable build (:class:`EntryWriter` with
``resumable=True``, used for folders) works in ``.partial-<entry>/`` and journals each finished chunk of
files (``progress.jsonl``, appended only after the chunk's pixels are flushed to disk): a build that was
interrupted (Ctrl-C, SIGKILL, a crash) continues where it stopped the next time, without decoding the
finished chunks again. Leftover unique temporary directories of dead processes are removed the next time
the same entry is written. Old entries are never deleted automatically: remove the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # POSIX: an advisory lock makes claiming a resumable build atomic between processes
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: every build is private (not resumable)
    fcntl = None  # type: ignore[assignment]

from byol.runtime.process import pid_alive
from byol.data.decode import DecodeReport
from byol.errors import ByolError

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

    Use as a context manager. Leaving the block without committing deletes the temporary directory, except
    for a ``resumable`` build interrupted by anything but a data error: its ``.partial-`` directory and
    journal (:attr:`journal`) stay for the next build of the same entry. When another live process is
    already building the same entry resumably, this one builds privately (not resumable) instead.
    """

    def __init__(self, final: Path, *, resumable: bool = False) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        self.journal: ChunkJournal | None = None
        partial = final.parent / f".partial-{final.name}"
        self._lock: _Lock | None = _claim(partial) if resumable else None
        if self._lock is not None:
            self.tmp = partial
            self.journal = ChunkJournal(partial)
        else:
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
        """A writable memory-mapped uint8 ``images.npy`` in the temporary directory (a resumable build
        reopens the one it left, if its shape matches, and keeps its journal; otherwise starts afresh)."""
        path = self.tmp / _IMAGES
        if self.journal is not None and path.exists():
            try:
                old = np.load(path, mmap_mode="r+")
                if old.shape == tuple(shape) and old.dtype == np.uint8:
                    self.journal.attach(old)
                    return old
            except (OSError, ValueError, EOFError):  # EOFError: a file cut before its header was written
                pass
        if self.journal is not None:
            self.journal.reset()
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        if self.journal is not None:
            self.journal.attach(images)
        return images

    def keep_rows(self, images: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Replace ``images.npy`` by its rows ``keep`` (copied in bounded chunks); returns the new array."""
        if self.journal is not None:
            self.journal.reset()  # the rows move: the journal no longer describes images.npy
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
        for extra in (_JOURNAL, _OWNER):
            (self.tmp / extra).unlink(missing_ok=True)
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
        finally:
            self._release()
        self._committed = True

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._committed:
            return
        if self.journal is not None and exc_type is not None and not issubclass(exc_type, ByolError):
            self.journal.close()  # interrupted: keep the finished chunks for the next build
            (self.tmp / _OWNER).unlink(missing_ok=True)
            self._release()
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()


_JOURNAL = "progress.jsonl"
_OWNER = "owner.pid"


class _Lock:
    """An exclusive advisory lock on ``path`` (``flock``), held until :meth:`release` or the process's end."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # while still held: no other process is inside
        os.close(self.fd)


def _claim(partial: Path) -> _Lock | None:
    """Make ``partial`` ours (create it, or take it over from a dead process), or None if another live process
    builds it. Two processes that start the same build at once (``byol reproduce --jobs 2``) must not both take
    it: the first to lock ``.lock-<partial>`` beside it wins, the other builds privately; the lock dies with
    its process, so a killed build is taken over. A live ``owner.pid`` in ``partial`` (a process of a version
    without the lock) is respected too."""
    if fcntl is None:
        return None
    lock_path = partial.parent / f".lock{partial.name}"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(lock_path).st_ino:  # its holder released (unlinked) it meanwhile
            raise OSError("stale lock file")
    except OSError:
        os.close(fd)
        return None
    lock = _Lock(lock_path, fd)
    partial.mkdir(parents=True, exist_ok=True)
    owner = partial / _OWNER
    try:
        pid = int(owner.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid and pid != os.getpid() and pid_alive(pid):
        lock.release()
        return None
    owner.write_text(str(os.getpid()))
    return lock


class ChunkJournal:
    """The finished chunks of a resumable build: one JSON line per chunk, written only after the chunk's
    pixels were flushed (at most every ``flush_seconds``; a kill loses only the chunks since then)."""

    def __init__(self, folder: Path, flush_seconds: float = 2.0) -> None:
        self.path = folder / _JOURNAL
        self.flush_seconds = flush_seconds
        self._images: np.ndarray | None = None
        self._pending: list[str] = []
        self._last = time.monotonic()

    def attach(self, images: np.ndarray) -> None:
        self._images = images

    def reset(self) -> None:
        self._pending.clear()
        self.path.unlink(missing_ok=True)

    def done(self) -> dict[int, DecodeReport]:
        out: dict[int, DecodeReport] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out[int(rec["start"])] = DecodeReport({int(k): str(v) for k, v in rec["failed"].items()},
                                                      Counter({str(k): int(v) for k, v in rec["converted"].items()}))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut by a kill: that chunk is decoded again
        return out

    def record(self, start: int, report: DecodeReport) -> None:
        self._pending.append(json.dumps({"start": start, "failed": report.failed, "converted": dict(report.converted)}))
        if time.monotonic() - self._last >= self.flush_seconds:
            self.close()

    def close(self) -> None:
        """Flush the pixels, then append the pending chunk lines."""
        if not self._pending:
            return
        if isinstance(self._images, np.memmap):
            self._images.flush()
        with open(self.path, "a") as f:
            f.write("".join(line + "\n" for line in self._pending))
            f.flush()
            os.fsync(f.fileno())
        self._pending.clear()
        self._last = time.monotonic()

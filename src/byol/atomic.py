"""The one atomic file write: every file of a run (``config.yaml``, ``env.json``, ``summary.json``,
checkpoints), a results card, a label subset, a feature cache entry, a reproduction record or a report
goes through :func:`atomic_write`, so a kill, a crash or a full disk at any moment leaves either the old
file or the new one, never a truncated mix, and no stray temporary file.

How: the bytes go to a temporary file in the target's directory (same file system, so the rename is
atomic), are flushed and fsynced, the temporary file is renamed over the target (``os.replace``), then the
directory is fsynced where the platform allows it (so the rename itself survives a power cut). On any
error the temporary file is removed and the error raised; the target is untouched.

At the top of the package (layer 0, next to :mod:`byol.errors`) so that every layer can use it, from the
unpacked data sets, exported models and the compiled view kernel (layer 1) to the reports (layer 5).
Imports only the standard library.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_target", "atomic_write"]

Writer = Callable[[BinaryIO], object]


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory: the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a file made by someone else (a compiler, a symlink): when the
    block ends without error it is renamed over ``path`` and the directory fsynced; on any error it is
    removed and the error raised. The parent directory is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes | Writer, *, encoding: str = "utf-8",
                 errors: str = "strict") -> Path:
    """Replace ``path`` with ``data`` atomically (module docs); returns ``path`` as a :class:`Path`.

    ``data`` is text (encoded with ``encoding``/``errors``), bytes, or a writer called with the open binary
    temporary file (e.g. ``lambda f: np.save(f, array)`` or ``lambda f: torch.save(obj, f)``). The parent
    directory is created if missing."""
    path = Path(path)
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data.encode(encoding, errors) if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    return path

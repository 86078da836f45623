"""Checkpoint files: atomic, verified writes, safe reads, keep-last-N rotation and the run-directory lock.

A checkpoint is a plain ``torch.save`` file that holds only tensors, dicts, lists, numbers, strings and
None, so it is read with ``torch.load(..., weights_only=True)``: a file that needs anything else (e.g. a
crafted pickle whose ``__reduce__`` runs a command) is refused before any of it runs.

Writes go through :func:`byol.atomic.atomic_write` (a temporary file in the same directory, fsynced, renamed
over the target, the directory fsynced). Beside each
checkpoint ``FILE.sha256`` lists the sha256 and size of the bytes it may hold: written *before* the
rename with both the new and the previous digest, so a kill at any point leaves a file that verifies.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from byol.atomic import atomic_write
from byol.errors import ByolError
from byol.runtime.process import pid_alive

__all__ = ["CheckpointError", "save_checkpoint", "read_checkpoint", "verify", "last_good", "rotate", "remove_all",
           "run_lock", "numbered_name", "rng_state", "restore_rng"]

_NUMBERED = re.compile(r"^step(\d{7,})\.pt$")
#: Every file a run writes in ``checkpoints/``: ``last.pt``, ``stepNNNNNNN.pt``, their digests, and the
#: temporary files of :func:`byol.atomic.atomic_write` a kill may leave (``.NAME.PID-HEX.tmp``).
_OURS = re.compile(r"^(?:last|step\d{7,})\.pt(?:\.sha256)?$|^\.(?:last|step\d{7,})\.pt(?:\.sha256)?\.\d+-[0-9a-f]{8}\.tmp$")
_CHUNK = 1 << 20


class CheckpointError(ByolError):
    """A checkpoint that cannot be written or read safely."""


def numbered_name(step: int) -> str:
    return f"step{step:07d}.pt"


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_bytes(fh: BinaryIO, data: bytes) -> None:
    """Write ``data`` in 1 MB chunks (one place, so tests can interrupt a write half-way)."""
    view = memoryview(data)
    for i in range(0, len(view), _CHUNK):
        fh.write(view[i : i + _CHUNK])


def _atomic_write(data: bytes, path: Path) -> None:
    atomic_write(path, lambda fh: _write_bytes(fh, data))


def _known_digests(path: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(_digest_path(path).read_text())["accept"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def save_checkpoint(obj: dict[str, Any], *paths: Path) -> None:
    """Serialize ``obj`` once, then write it to each of ``paths`` atomically with its digest (module docs).

    A full disk (ENOSPC/EDQUOT) raises :class:`CheckpointError` (one line); the previous file is intact."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    new = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    for path in map(Path, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_verified(data, new, path)


def _write_pair(data: bytes, digest: dict[str, Any], path: Path) -> None:
    """The digest file, then the checkpoint. If the checkpoint's write fails (a full disk, any error), a file
    that did not exist before leaves no digest behind: a ``stepNNN.pt.sha256`` alone would name a checkpoint
    that never was. An existing file keeps the digest that accepts both its old and the new bytes."""
    existed = path.is_file()
    previous = [d for d in _known_digests(path)[:1] if existed]
    _atomic_write(json.dumps({"accept": [digest, *previous]}).encode(), _digest_path(path))
    try:
        _atomic_write(data, path)
    except BaseException:
        if not existed:
            _digest_path(path).unlink(missing_ok=True)
        raise


def _write_verified(data: bytes, digest: dict[str, Any], path: Path) -> None:
    try:
        _write_pair(data, digest, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            last = path.with_name("last.pt")
            good = last if last.is_file() and verify(last) is None else last_good(path.parent)
            raise CheckpointError(f"cannot write {path}: no space left on device; the last good checkpoint is "
                                  f"{good or 'none'}") from None
        raise


def verify(path: Path) -> str | None:
    """Why ``path`` fails its digest check (None: it verifies, or it has no digest file: older byol)."""
    accept = _known_digests(path)
    if not _digest_path(path).is_file():
        return None
    size = path.stat().st_size
    if not any(d.get("size") == size for d in accept):
        return f"size {size} bytes, expected {' or '.join(str(d.get('size')) for d in accept)}"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return None if any(d.get("sha256") == h.hexdigest() for d in accept) else "sha256 mismatch"


def _numbered(ckpt_dir: Path) -> list[Path]:
    found = [p for p in Path(ckpt_dir).glob("step*.pt") if _NUMBERED.match(p.name)]
    return sorted(found, key=lambda p: int(_NUMBERED.match(p.name).group(1)))  # type: ignore[union-attr]


def remove_all(ckpt_dir: Path) -> None:
    """Delete every file a run wrote in ``ckpt_dir`` (``_OURS``); any other file (a user's) stays."""
    if Path(ckpt_dir).is_dir():
        for p in Path(ckpt_dir).iterdir():
            if _OURS.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)


def last_good(ckpt_dir: Path) -> Path | None:
    """The newest numbered checkpoint in ``ckpt_dir`` that verifies."""
    for p in reversed(_numbered(ckpt_dir)):
        if verify(p) is None:
            return p
    return None


def rotate(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` numbered checkpoints (and their digests); ``keep <= 0``: keep all."""
    if keep <= 0:
        return
    for p in _numbered(ckpt_dir)[:-keep]:
        p.unlink(missing_ok=True)
        _digest_path(p).unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A verified checkpoint on the CPU, loaded with ``weights_only=True`` (no code runs).

    Tensors and RNG states alike stay on the CPU (``torch.set_rng_state`` takes only CPU tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    problem = verify(path)
    if problem:
        good = last_good(path.parent)
        hint = f"the last good checkpoint is {good}" if good else "no numbered checkpoint verifies"
        raise CheckpointError(f"checkpoint {path} is damaged ({problem}); {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain values, and loading them "
            f"could run code ({what[:120]}); if you trust it, re-save it with plain contents (load it with "
            "torch.load(f, weights_only=False), turn other objects into tensors/lists/dicts, torch.save)") from None
    except (RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a byol checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt



def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _create_with_pid(lock: Path, pid: int) -> bool:
    """Create ``lock`` holding ``pid`` in one step (a hard link of a written temp file: nobody ever sees it
    empty); False if it exists."""
    tmp = lock.with_name(f"{lock.name}.{pid}")
    tmp.write_text(f"{pid}\n")
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (our PID) while training: a second process writing there is refused; a lock
    left by a process that no longer exists is taken over. Released on exit."""
    run_dir = Path(run_dir)
    lock = run_dir / ".lock"
    me = os.getpid()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        taken = _create_with_pid(lock, me)
    except OSError as exc:  # read-only parent, permission denied, a file where the folder should be...
        raise CheckpointError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}; "
                              "pick another --run-dir") from None
    for _ in range(3):
        if taken or _create_with_pid(lock, me):
            break
        taken = False
        owner = _lock_owner(lock)
        if owner is not None and owner != me and pid_alive(owner):
            raise CheckpointError(f"{run_dir} is in use by process {owner} (lock {lock}); wait for it to end "
                                  "or use another --run-dir")
        lock.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise CheckpointError(f"cannot take the lock {lock}")
    try:
        yield
    finally:
        if _lock_owner(lock) == me:
            lock.unlink(missing_ok=True)


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """The random states a resume must restore: torch's, CUDA's (if any) and the views' generator (with the
    type of its device: a CPU generator's state and a CUDA one's differ in kind and size)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "augment": gen.get_state(), "augment_device": gen.device.type}


def restore_rng(rng: dict[str, Any], gen: torch.Generator, *, reseed: int) -> None:
    """Put back the states of :func:`rng_state`. What cannot be put back does not stop the resume: a run
    resumed on another device type (``device: auto`` picks CUDA or the CPU by what is there) gets a fresh
    view generator seeded with ``reseed``, one with fewer visible GPUs the CUDA states of those it has; one
    warning says the random stream is not continued exactly."""
    torch.set_rng_state(rng["torch"])
    notes = []
    cuda = rng.get("cuda")
    if cuda and torch.cuda.is_available():
        visible = torch.cuda.device_count()
        for i, state in enumerate(cuda[:visible]):
            torch.cuda.set_rng_state(state, i)
        if len(cuda) > visible:
            notes.append(f"it holds the CUDA random states of {len(cuda)} GPUs and {visible} are visible")
    state, saved_on = rng["augment"], rng.get("augment_device")
    mine = gen.get_state()
    if saved_on not in (None, gen.device.type) or state.numel() != mine.numel():
        notes.append(f"its view generator ran on {saved_on or 'another device type'} and this run's is on "
                     f"{gen.device.type}")
        gen.manual_seed(reseed)
    else:
        gen.set_state(state.to(mine.device))
    if notes:
        warnings.warn(f"resuming from a checkpoint whose random state cannot be continued exactly ({'; '.join(notes)}):"
                      " training continues with fresh random draws, so it will not repeat the original run bit for "
                      "bit", stacklevel=2)

"""Uniform access to the files of an image folder or a ``.zip`` archive.

Both stores list files as POSIX paths relative to their root, read a file's bytes, and give a cheap
fingerprint (sizes and modification times, no decoding) that changes whenever the content may have.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import zipfile
from pathlib import Path
from typing import Protocol

from byol.errors import DataError


class FileStore(Protocol):
    root: Path

    def list_files(self) -> list[str]: ...

    def read(self, relpath: str) -> bytes: ...

    def fingerprint(self) -> str: ...

    def close(self) -> None: ...


def _is_hidden(relpath: str) -> bool:
    # macOS zips carry __MACOSX/ resource forks and ._ files; editors leave dot files around.
    return any(part.startswith(".") or part == "__MACOSX" for part in relpath.split("/"))


class DirStore:
    """The files below a directory, recursively; symlinked folders are followed (each real folder once).

    Dangling symlinks are listed too (reading one raises ``FileNotFoundError`` "broken symlink"), so that
    they are reported with the other files that could not be used instead of vanishing silently.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stats: list[tuple[str, int, int]] | None = None

    def _scan(self) -> list[tuple[str, int, int]]:
        if self._stats is None:
            found: list[tuple[str, int, int]] = []
            seen: set[str] = set()
            stack = [("", str(self.root))]
            while stack:
                prefix, directory = stack.pop()
                real = os.path.realpath(directory)
                if real in seen:  # a symlink cycle or a folder linked twice
                    continue
                seen.add(real)
                try:
                    entries = list(os.scandir(directory))
                except OSError as exc:
                    raise DataError(f"cannot list {directory}: {exc.strerror}; check the path and its permissions") from exc
                for entry in entries:
                    rel = prefix + entry.name
                    if _is_hidden(rel):
                        continue
                    try:
                        if entry.is_dir():
                            stack.append((rel + "/", entry.path))
                        elif entry.is_file():
                            st = entry.stat()
                            found.append((rel, st.st_size, st.st_mtime_ns))
                        elif entry.is_symlink():  # dangling: listed, so that it is reported as skipped
                            st = entry.stat(follow_symlinks=False)
                            found.append((rel, -1, st.st_mtime_ns))
                    except OSError:  # a file removed meanwhile
                        continue
            found.sort()
            self._stats = found
        return self._stats

    def list_files(self) -> list[str]:
        return [rel for rel, _, _ in self._scan()]

    def read(self, relpath: str) -> bytes:
        path = self.root / relpath
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if path.is_symlink():
                raise FileNotFoundError(errno.ENOENT, "broken symlink", str(path)) from None
            raise

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for rel, size, mtime in self._scan():
            digest.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def close(self) -> None:
        pass


class ZipStore:
    """The members of a zip archive, read in place (nothing is extracted to disk).

    Each thread gets its own open ``ZipFile`` handle, so parallel decoding never shares a file position.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            zf = zipfile.ZipFile(root)
            infos = zf.infolist()
        except zipfile.BadZipFile as exc:
            raise DataError(f"{root} is not a valid zip archive ({exc}); re-create it or pass the extracted folder") from exc
        except OSError as exc:
            raise DataError(f"cannot open {root}: {exc.strerror}; check the path and its permissions") from exc
        self._members = sorted(i.filename for i in infos if not i.is_dir() and not _is_hidden(i.filename))
        self._local = threading.local()
        self._local.zf = zf  # reading the central directory of a large zip takes a while: reuse it
        self._handles: list[zipfile.ZipFile] = [zf]
        self._lock = threading.Lock()

    def _handle(self) -> zipfile.ZipFile:
        zf = getattr(self._local, "zf", None)
        if zf is None:
            zf = zipfile.ZipFile(self.root)
            self._local.zf = zf
            with self._lock:
                self._handles.append(zf)
        return zf

    def list_files(self) -> list[str]:
        return list(self._members)

    def read(self, relpath: str) -> bytes:
        return self._handle().read(relpath)

    def fingerprint(self) -> str:
        st = self.root.stat()
        return f"zip:{st.st_size}:{st.st_mtime_ns}"

    def close(self) -> None:
        with self._lock:
            for zf in self._handles:
                zf.close()
            self._handles.clear()
        self._local = threading.local()


def open_store(path: Path) -> FileStore:
    """A store for a directory or a ``.zip`` file; DataError for anything else."""
    if path.is_dir():
        return DirStore(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            return ZipStore(path)
        raise DataError(f"{path} is a file but not a zip archive; pass a folder of images or a .zip of one")
    raise DataError(f"{path} does not exist; pass an existing image folder, a .zip of one, or a data set name")

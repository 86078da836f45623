"""Loading a user's image folder or ``.zip`` archive into an :class:`ImageSet`.

Small images (at most :data:`~byol.data.cache.MAX_CACHED_SIZE` pixels a side after resizing) are decoded
once into the on-disk cache and memory-mapped from then on. Larger images are decoded at ``image_size``
into memory on every load (N x C x S x S bytes). Sets too large for either are streamed instead
(:mod:`byol.data.stream`, which uses :func:`decode_subset` for its in-memory sample).

Files that cannot be used are skipped and counted by reason (empty, not an image, truncated, too large,
broken symlink, permission denied); files that need a conversion (CMYK, 16-bit, palette, transparency,
upscaling) are converted and counted. Both are reported once per load as one :class:`SkippedImagesWarning`
line (the CLI prints it as one plain line) and kept on the ImageSet (``skipped``, ``skip_reasons``,
``converted``); a pretraining run also lists the skipped files in ``skipped_files.txt``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from byol.data import decode as _decode
from byol.data.archive import FileStore, open_store
from byol.data.cache import (
    MAX_CACHED_SIZE,
    DecodedImages,
    EntryWriter,
    cache_key,
    default_cache_dir,
    entry_dir,
    read_entry,
)
from byol.data.imageset import ImageSet
from byol.data.layout import Layout, discover
from byol.data.workers import decode_into
from byol.errors import DataError

_PROBE_SAMPLE = 64  # headers read to choose the channel count and the common size
_SKIPPED_SHOWN = 5


class SkippedImagesWarning(UserWarning):
    """Some files of an image folder could not be decoded and were left out, or needed a conversion."""


def default_workers() -> int:
    """One decoding process per CPU but one (the parent unpickles and writes the results), at most 8.

    On a 2-core machine this means decoding in-process: measured there, 2 worker processes were slower
    than 1 in-process decoder (worker start-up and the parent competing for the same cores).
    """
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _probe_sample(store: FileStore, files: list[str]) -> list[_decode.Probe]:
    """Header probes of up to ``_PROBE_SAMPLE`` files spread over the list (classes are contiguous)."""
    n = len(files)
    picks = sorted({round(i * (n - 1) / max(1, _PROBE_SAMPLE - 1)) for i in range(min(n, _PROBE_SAMPLE))})
    probes: list[_decode.Probe] = []
    for i in picks:
        with contextlib.suppress(_decode.UnreadableImage, OSError):
            probes.append(_decode.probe(store.read(files[i])))
    if not probes:  # every sampled file is bad: look for any readable one before giving up
        for f in files:
            with contextlib.suppress(_decode.UnreadableImage, OSError):
                probes.append(_decode.probe(store.read(f)))
                break
    return probes


def printable(name: str) -> str:
    """A file name safe to print: bytes that are not UTF-8 (kept by Python as surrogates) as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counter.most_common())


def report_line(source: str, used: int, skipped: list[str], reasons: dict[str, str], converted: dict[str, int]) -> str:
    """The one line that says what a folder's files became: used, skipped (why, which) and converted."""
    line = f"{printable(source)}: {used} images"
    if skipped:
        shown = ", ".join(printable(f) for f in skipped[:_SKIPPED_SHOWN]) + (", ..." if len(skipped) > _SKIPPED_SHOWN else "")
        why = _counts(Counter(reasons.get(f, "unreadable") for f in skipped))
        line += f"; skipped {len(skipped)} file(s) ({why}): {shown}"
    if converted:
        line += f"; converted {sum(converted.values())} ({_counts(Counter(converted))})"
    return line


def _warn_skipped(decoded: DecodedImages, source: str) -> None:
    meta = decoded.meta
    if not meta["skipped"] and not meta.get("converted"):
        return
    line = report_line(source, len(meta["paths"]), meta["skipped"], meta.get("skip_reasons", {}), meta.get("converted", {}))
    warnings.warn(line, SkippedImagesWarning, stacklevel=4)


def probe_files(store: FileStore, files: list[str], source: str) -> tuple[int, tuple[int, int]]:
    """(channels, most common (H, W)) of ``files`` from a header sample; DataError if none is readable."""
    probes = _probe_sample(store, files)
    if not probes:
        raise DataError(f"none of the {len(files)} image files in {source} can be decoded; check the files")
    auto_channels, common = _decode.summarize_probes(probes)
    assert common is not None  # there is at least one probe
    return auto_channels, common


def _target_shape(
    store: FileStore, files: list[str], image_size: int | None, channels: int | None, source: str
) -> tuple[int, int, int, int]:
    """``[N, C, H, W]`` from the requested options, else from a header sample."""
    auto_channels, common = probe_files(store, files, source)
    height, width = (image_size, image_size) if image_size is not None else common
    return len(files), channels if channels is not None else auto_channels, height, width


def _decode_all(
    store: FileStore,
    layout: Layout,
    shape: tuple[int, int, int, int],
    writer: EntryWriter | None,
    *,
    image_size: int | None,
    workers: int,
    progress: bool,
    source: str,
    desc: str,
) -> DecodedImages:
    """Decode every file of ``layout``, into the cache ``writer`` if given, else into memory."""
    images = writer.array(shape) if writer is not None else np.empty(shape, dtype=np.uint8)
    report = decode_into(images, layout.files, store, image_size=image_size, workers=workers, progress=progress,
                         desc=desc, journal=writer.journal if writer is not None else None)
    failed = sorted(report.failed)
    skipped = [layout.files[i] for i in failed]
    if len(failed) == len(layout.files):
        raise DataError(
            f"none of the {len(layout.files)} image files in {source} can be decoded "
            f"(e.g. {', '.join(printable(f) for f in skipped[:3])}: {_counts(Counter(report.failed.values()))}); "
            "check the files"
        )
    keep = np.setdiff1d(np.arange(len(layout.files)), np.asarray(failed, dtype=np.int64))
    if failed:
        images = writer.keep_rows(images, keep) if writer is not None else images[keep]
    labels = None if layout.labels is None else np.asarray(layout.labels, dtype=np.int64)[keep]
    meta = {"source": source, "classes": layout.classes, "paths": [layout.files[i] for i in keep], "skipped": skipped,
            "skip_reasons": {layout.files[i]: report.failed[i] for i in failed}, "converted": dict(report.converted)}
    return DecodedImages(images=images, labels=labels, meta=meta)


def source_name(path: Path) -> str:
    """The short name of a folder or zip (the ImageSet's ``name`` and the cache entry's prefix)."""
    return (path.stem if path.suffix.lower() == ".zip" else path.resolve().name) or "images"


def load_folder(
    path: Path,
    split: str,
    *,
    image_size: int | None,
    channels: int | None,
    cache_dir: str | Path | None,
    progress: bool,
    workers: int | None = None,
) -> ImageSet:
    """Load an image folder or zip (layout rules in :mod:`byol.data.layout`), through the cache if small."""
    source = str(path)
    name = source_name(path)
    store = open_store(path)
    try:
        layout = discover(store.list_files(), split, source)
        cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        final = entry_dir(cache_root, name, cache_key(path, split.lower(), image_size, channels, store.fingerprint()))
        decoded = read_entry(final)
        if decoded is None:
            shape = _target_shape(store, layout.files, image_size, channels, source)
            decode_to: Callable[[EntryWriter | None], DecodedImages] = functools.partial(
                _decode_all, store, layout, shape, image_size=image_size, workers=workers or default_workers(),
                progress=progress, source=source, desc=f"decoding {name}",
            )  # fmt: skip
            decoded = decode_to(None) if max(shape[2:]) > MAX_CACHED_SIZE else _decode_via_cache(decode_to, final)
    finally:
        store.close()
    _warn_skipped(decoded, source)
    return _image_set(decoded, name)


def decode_subset(
    store: FileStore, layout: Layout, *, image_size: int, channels: int, workers: int | None, progress: bool,
    source: str, name: str,
) -> ImageSet:
    """The files of ``layout`` decoded into memory at ``image_size`` (centre square), never cached: the
    streaming path's sample for statistics, the kNN monitor and the verdict, which changes with the seed
    and ``data.limit`` and is small, so a cache entry per sample would only fill the disk."""
    shape = (len(layout.files), channels, image_size, image_size)
    decoded = _decode_all(store, layout, shape, None, image_size=image_size, workers=workers or default_workers(),
                          progress=progress, source=source, desc=f"decoding a sample of {name}")
    _warn_skipped(decoded, source)
    return _image_set(decoded, name)


def _image_set(decoded: DecodedImages, name: str) -> ImageSet:
    return ImageSet(
        images=torch.from_numpy(decoded.images),
        labels=None if decoded.labels is None else torch.from_numpy(decoded.labels),
        classes=decoded.meta["classes"],
        name=name,
        paths=list(decoded.meta["paths"]),
        skipped=list(decoded.meta["skipped"]),
        skip_reasons=dict(decoded.meta.get("skip_reasons", {})),
        converted=dict(decoded.meta.get("converted", {})),
    )


def _decode_via_cache(decode_to: Callable[[EntryWriter | None], DecodedImages], final: Path) -> DecodedImages:
    """Decode into a new cache entry at ``final`` and map it back; in memory if the cache is unwritable."""
    try:
        with EntryWriter(final, resumable=True) as writer:
            fresh = decode_to(writer)
            writer.commit(fresh.images, fresh.labels, fresh.meta)
    except OSError as exc:  # read-only or full disk: the cache is an optimisation, not a requirement
        warnings.warn(f"cannot write the image cache in {final.parent} ({exc}); decoding into memory", stacklevel=4)
        return decode_to(None)
    del fresh
    cached = read_entry(final)
    if cached is None:
        raise DataError(f"the image cache entry {final} could not be read back; delete it and retry")
    return cached

"""``load_images``: one entry point for named data sets, image folders and zip archives."""

from __future__ import annotations

import os
from pathlib import Path

from byol.config.checks import did_you_mean
from byol.data.folder import load_folder
from byol.data.imageset import ImageSet
from byol.data.torchvision_sets import load_named
from byol.errors import DataError

# Accepted spellings -> canonical name (also the ImageSet.name and the DATASET_STATS key).
DATASET_ALIASES: dict[str, str] = {
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar100": "cifar100",
    "cifar-100": "cifar100",
    "stl10": "stl10",
    "stl-10": "stl10",
}


def _looks_like_path(source: str) -> bool:
    return "/" in source or os.sep in source or source.lower().endswith(".zip") or source.startswith(".")


def folder_path(source: str) -> Path | None:
    """The folder or zip ``source`` names, or None for a named data set (names win, as in :func:`load_images`)."""
    if DATASET_ALIASES.get(source.lower()) is not None and not _looks_like_path(source):
        return None
    return Path(source).expanduser()


def load_images(
    source: str,
    split: str = "train",
    *,
    image_size: int | None = None,
    data_dir: str | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    channels: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> ImageSet:
    """Load a data set as uint8 ``[N, C, H, W]`` images.

    Args:
        source: a data set name (``fashion-mnist``/``fmnist``, ``cifar10``, ``cifar100``, ``stl10``), or the
            path of an image folder or a ``.zip`` of one (layout rules in :mod:`byol.data.layout`). Names
            win over a same-named folder in the working directory; write ``./cifar10`` to mean the folder.
        split: ``train``/``test`` (STL-10 also ``unlabeled``, ``train+unlabeled``; folders also ``val``,
            ``unlabeled`` and joined splits such as ``train+unlabeled``, see :mod:`byol.data.layout`).
        image_size: resize the shorter side to this and centre-crop a square. Without it, the images of a
            folder must all have one size.
        data_dir: where a named data set's files are (Fashion-MNIST also looks in
            ``/usr/share/datasets/fashion-mnist``).
        cache_dir: the decode-once cache (default ``$BYOL_CACHE_DIR`` or ``~/.cache/byol``).
        download: let torchvision download a named data set that is not found.
        channels: 1 or 3; default: 1 if the sampled images are all grey, else 3 (native for named sets).
        progress: show a progress bar while decoding.
        workers: decoding processes for large folders (default: CPUs minus one, at most 8; 1 = in-process).

    Raises:
        DataError: for a missing, empty or unusable source, or bad arguments.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image size must be a positive integer, got {image_size!r}")
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    if not source:
        raise DataError("no data source given; pass a data set name (e.g. cifar10) or an image folder / .zip path")
    canonical = DATASET_ALIASES.get(source.lower())
    if canonical is not None and not _looks_like_path(source):
        return load_named(
            canonical, split, data_dir=data_dir, cache_dir=cache_dir, download=download,
            image_size=image_size, channels=channels,
        )  # fmt: skip
    path = Path(source).expanduser()
    if not path.exists():
        names = sorted(set(DATASET_ALIASES.values()))
        hint = did_you_mean(source.lower(), names) if not _looks_like_path(source) else ""
        raise DataError(f"{source} does not exist and is not a data set name{hint} ({', '.join(names)}); "
                        "pass an image folder or .zip")
    return load_folder(
        path, split, image_size=image_size, channels=channels, cache_dir=cache_dir, progress=progress, workers=workers
    )

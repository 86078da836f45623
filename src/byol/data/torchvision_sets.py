"""Standard data sets read through torchvision's dataset classes (Fashion-MNIST, CIFAR-10/100, STL-10).

These load in a second or two straight into uint8 tensors, so they bypass the decode-once cache.
torchvision is imported inside the functions: importing it costs seconds (it loads every model
definition), which users of image folders should not pay.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byol.atomic import atomic_target, atomic_write
from byol.data.cache import default_cache_dir
from byol.data.imageset import ImageSet
from byol.errors import DataError

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_DOWNLOAD_HINT = "or add --download on a machine with internet"


def _resolve_root(data_dir: str | None, cache_dir: str | Path | None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / "torchvision"


def _conform(images: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    """Resize (shorter side, then centre crop) and convert channels, in chunks to bound memory."""
    need_size = image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size)
    need_channels = channels is not None and channels != images.shape[1]
    if not (need_size or need_channels):
        return images
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    from torchvision.transforms.v2 import functional as TF

    parts = []
    for chunk in images.split(4096):
        if need_channels:
            chunk = chunk.expand(-1, 3, -1, -1) if channels == 3 else TF.rgb_to_grayscale(chunk, num_output_channels=1)
        if need_size:
            assert image_size is not None
            chunk = TF.center_crop(TF.resize(chunk, [image_size], antialias=True), [image_size, image_size])
        parts.append(chunk.contiguous())
    return torch.cat(parts)


def _construct(title: str, make: Callable[[], Any], hint: str = "") -> Any:
    """Build a torchvision dataset, turning its errors (missing or damaged files) into one-line DataErrors."""
    try:
        ds = make()
    except (RuntimeError, OSError, AssertionError, ValueError, TypeError, EOFError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = message.split(" You can use download=True")[0].rstrip(". ")  # our hint says how, in CLI terms
        raise DataError(f"cannot load {title}: {message}{hint}") from exc
    return ds


# ---------------------------------------------------------------------------------------------- Fashion-MNIST


def _fashion_files_in(directory: Path) -> dict[str, Path] | None:
    """The four IDX files (plain or ``.gz``) in ``directory``, or None if any is missing."""
    found: dict[str, Path] = {}
    for stem in FASHION_MNIST_FILES:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            return None
    return found


def _find_fashion(data_dir: str | None) -> tuple[dict[str, Path] | None, list[Path]]:
    searched: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        searched += [root, root / "FashionMNIST" / "raw"]
    searched.append(SYSTEM_FASHION_MNIST_DIR)
    for directory in searched:
        files = _fashion_files_in(directory)
        if files is not None:
            if data_dir is not None and directory == SYSTEM_FASHION_MNIST_DIR:  # a typo must not go unnoticed
                why = "does not exist" if not Path(data_dir).expanduser().exists() else "has no Fashion-MNIST files"
                warnings.warn(f"--data-dir {data_dir} {why}: using the system copy in {directory}", stacklevel=3)
            return files, searched
    return None, searched


def _stage_fashion(files: dict[str, Path], cache_dir: str | Path | None) -> Path:
    """A torchvision root (``<root>/FashionMNIST/raw/<plain IDX files>``) for the given files.

    torchvision reads only decompressed IDX files from exactly that layout. Plain files are symlinked;
    ``.gz`` files are decompressed once (about 55 MB for the full set) into the cache, keyed by the
    source files' paths, sizes and mtimes, each written to a temporary name and renamed into place.
    """
    digest = hashlib.sha256()
    for stem in FASHION_MNIST_FILES:
        st = files[stem].stat()
        digest.update(f"{files[stem].resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = base / "fashion-mnist" / digest.hexdigest()[:20]
    raw = root / "FashionMNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for stem in FASHION_MNIST_FILES:
            target = raw / stem
            if target.exists():
                continue
            if files[stem].suffix == ".gz":
                with gzip.open(files[stem], "rb") as src:
                    atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
                continue
            with atomic_target(target) as tmp:  # a symlink, renamed into place like a file
                tmp.symlink_to(files[stem].resolve())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot prepare Fashion-MNIST from {files[FASHION_MNIST_FILES[0]].parent}: {exc}") from exc
    return root


def load_fashion_mnist(
    split: str, *, data_dir: str | None, cache_dir: str | Path | None, download: bool
) -> ImageSet:
    if split not in ("train", "test"):
        raise DataError(f"Fashion-MNIST has splits 'train' and 'test', not '{split}'")
    files, searched = _find_fashion(data_dir)
    if files is not None:
        root = _stage_fashion(files, cache_dir)
    elif download:
        root = _resolve_root(data_dir, cache_dir)
    else:
        where = ", ".join(str(p) for p in searched)
        raise DataError(
            f"Fashion-MNIST not found in {where}; install it with `sudo apt-get install dataset-fashion-mnist`, "
            f"pass --data-dir DIR holding the IDX .gz files, {_DOWNLOAD_HINT}"
        )
    from torchvision import datasets

    ds = _construct("Fashion-MNIST", lambda: datasets.FashionMNIST(str(root), train=split == "train", download=download))
    images = ds.data.unsqueeze(1).contiguous()
    return ImageSet(images=images, labels=ds.targets.long(), classes=list(ds.classes), name="fashion-mnist")


# --------------------------------------------------------------------------------------------- CIFAR, STL-10


def load_cifar(
    name: str, split: str, *, data_dir: str | None, cache_dir: str | Path | None, download: bool
) -> ImageSet:
    """CIFAR-10 or CIFAR-100 (``name`` is ``"cifar10"`` or ``"cifar100"``) from torchvision's python pickles."""
    if split not in ("train", "test"):
        raise DataError(f"{name} has splits 'train' and 'test', not '{split}'")
    from torchvision import datasets

    root = _resolve_root(data_dir, cache_dir)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = cls.base_folder
    if not download and not (root / folder).is_dir():
        raise DataError(
            f"{name} not found: no {folder}/ in {root}; pass --data-dir DIR containing it, {_DOWNLOAD_HINT} "
            f"(a folder or .zip of images works too)"
        )
    hint = f" (in {root}; delete the damaged files and add --download, or pass another --data-dir)"
    ds = _construct(name, lambda: cls(str(root), train=split == "train", download=download), hint)
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    return ImageSet(images=images, labels=torch.as_tensor(ds.targets, dtype=torch.int64), classes=list(ds.classes), name=name)


STL10_SPLITS = ("train", "test", "unlabeled", "train+unlabeled")


def load_stl10(split: str, *, data_dir: str | None, cache_dir: str | Path | None, download: bool) -> ImageSet:
    """STL-10 at 96x96; split ``unlabeled`` has no labels (``train+unlabeled`` marks unlabeled ones -1)."""
    if split not in STL10_SPLITS:
        raise DataError(f"stl10 has splits {', '.join(STL10_SPLITS)}, not '{split}'")
    from torchvision import datasets

    root = _resolve_root(data_dir, cache_dir)
    folder = datasets.STL10.base_folder
    if not download and not (root / folder).is_dir():
        raise DataError(f"stl10 not found: no {folder}/ in {root}; pass --data-dir DIR containing it, {_DOWNLOAD_HINT}")
    ds = _construct("stl10", lambda: datasets.STL10(str(root), split=split, download=download), f" (in {root})")
    images = torch.from_numpy(np.ascontiguousarray(ds.data))  # already NCHW uint8
    labels = None if split == "unlabeled" else torch.as_tensor(ds.labels, dtype=torch.int64)
    return ImageSet(images=images, labels=labels, classes=None if labels is None else list(ds.classes), name="stl10")


def load_named(
    name: str,
    split: str,
    *,
    data_dir: str | None,
    cache_dir: str | Path | None,
    download: bool,
    image_size: int | None,
    channels: int | None,
) -> ImageSet:
    """Load a canonical data set name (see :data:`byol.data.sources.DATASET_ALIASES`)."""
    if name == "fashion-mnist":
        ds = load_fashion_mnist(split, data_dir=data_dir, cache_dir=cache_dir, download=download)
    elif name in ("cifar10", "cifar100"):
        ds = load_cifar(name, split, data_dir=data_dir, cache_dir=cache_dir, download=download)
    elif name == "stl10":
        ds = load_stl10(split, data_dir=data_dir, cache_dir=cache_dir, download=download)
    else:  # pragma: no cover - guarded by the caller
        raise DataError(f"unknown data set {name}")
    ds.images = _conform(ds.images, image_size, channels)
    return ds

"""How a folder (or zip) of images is organised: wrapper folders, splits, classes.

Rules, applied to the image files' relative paths:

1. While every image lies below one single top-level folder that is not a split name, that folder is a
   wrapper and is looked through (a zip of ``cifar10/`` holding ``cifar10/train/...``).
2. If top-level folders named ``train``, ``test``, ``val`` (also ``valid``, ``validation``) exist, ``split``
   picks one and everything outside it is ignored. Without split folders the whole tree is split ``train``.
3. Inside the chosen root, if every image lies in a subfolder and there are at least two subfolders,
   those are the classes (sorted by name; images found at any depth below a class folder belong to it).
   Otherwise the images are unlabeled.
"""

from __future__ import annotations

from dataclasses import dataclass

from byol.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

_SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}


def is_image_file(relpath: str) -> bool:
    dot = relpath.rfind(".")
    return dot > relpath.rfind("/") and relpath[dot:].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Layout:
    files: list[str]  # relative to the store root, sorted by (class, path)
    labels: list[int] | None
    classes: list[str] | None


def _top(relpath: str) -> str | None:
    slash = relpath.find("/")
    return None if slash < 0 else relpath[:slash]


def _strip_wrappers(files: list[str]) -> str:
    """The common wrapper prefix (``""`` or ending in ``/``) to look through."""
    prefix = ""
    rest = files
    while True:
        tops = {_top(f) for f in rest}
        if len(tops) != 1:
            return prefix
        (top,) = tops
        if top is None or top.lower() in _SPLIT_ALIASES:
            return prefix
        prefix += top + "/"
        rest = [f[len(top) + 1 :] for f in rest]


def discover(files: list[str], split: str, source: str) -> Layout:
    """Select the images of ``split`` among ``files`` (store-relative paths) and assign labels."""
    images = [f for f in files if is_image_file(f)]
    if not images:
        exts = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DataError(f"no image files in {source}; expected files with extensions: {exts}")

    prefix = _strip_wrappers(images)
    rel = [f[len(prefix) :] for f in images]

    split_dirs: dict[str, str] = {}  # canonical split -> folder name as written
    for f in rel:
        top = _top(f)
        if top is not None and top.lower() in _SPLIT_ALIASES:
            split_dirs.setdefault(_SPLIT_ALIASES[top.lower()], top)

    wanted = _SPLIT_ALIASES.get(split.lower())
    if split_dirs:
        if wanted is None or wanted not in split_dirs:
            found = ", ".join(sorted(split_dirs.values()))
            raise DataError(f"{source} has no '{split}' split (found split folders: {found}); pass --split with one of them")
        folder = split_dirs[wanted] + "/"
        prefix += folder
        rel = [f[len(folder) :] for f in rel if f.startswith(folder)]
    elif split.lower() not in ("train", "all"):
        raise DataError(
            f"{source} has no train/test split folders, so it has no '{split}' split; use split 'train' for the "
            f"whole folder, or arrange it as train/ and {split}/ subfolders"
        )

    tops = [_top(f) for f in rel]
    labeled = all(t is not None for t in tops) and len(set(tops)) >= 2
    if not labeled:
        return Layout(files=sorted(prefix + f for f in rel), labels=None, classes=None)

    classes = sorted({t for t in tops if t is not None})
    index = {c: i for i, c in enumerate(classes)}
    pairs = sorted((index[t], prefix + f) for t, f in zip(tops, rel) if t is not None)
    return Layout(files=[f for _, f in pairs], labels=[c for c, _ in pairs], classes=classes)

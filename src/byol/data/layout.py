"""How a folder (or zip) of images is organised: wrapper folders, splits, classes.

Rules, applied to the image files' relative paths:

1. While every image lies below one single top-level folder that is not a split name, that folder is a
   wrapper and is looked through (a zip of ``cifar10/`` holding ``cifar10/train/...``).
2. If top-level folders named ``train``, ``test``, ``val`` (also ``valid``, ``validation``) exist, ``split``
   picks one and everything outside it is ignored. Without split folders the whole tree is split ``train``.
   ``unlabeled`` (also ``unlabelled``) is a split folder too, but only next to one of those (alone, it is
   a class folder like any other): the STL-10 layout ``train/<class>/``, ``test/<class>/``, ``unlabeled/``.
3. Inside the chosen root, if every image lies in a subfolder and there are at least two subfolders,
   those are the classes (sorted by name; images found at any depth below a class folder belong to it).
   Otherwise the images are unlabeled. The ``unlabeled`` split never has classes.
4. ``a+b`` (e.g. ``train+unlabeled``) is the images of split ``a`` followed by those of split ``b``. When
   some parts have classes (the same ones), the images of the other parts get label -1 (STL-10's
   convention for its ``train+unlabeled``); when none has, the whole split is unlabeled.
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
    "unlabeled": "unlabeled",
    "unlabelled": "unlabeled",
}

#: Split folders that are splits only next to another split folder (alone, ``unlabeled/`` is a class).
_COMPANION_SPLITS = frozenset({"unlabeled"})

#: The label of an image without one in a split that has labeled parts (``train+unlabeled``).
UNLABELED = -1


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


def _split_dirs(rel: list[str]) -> dict[str, str]:
    """Canonical split -> folder name as written, of the top-level split folders of ``rel``."""
    found: dict[str, str] = {}
    for f in rel:
        top = _top(f)
        if top is not None and top.lower() in _SPLIT_ALIASES:
            found.setdefault(_SPLIT_ALIASES[top.lower()], top)
    if set(found) <= _COMPANION_SPLITS:  # an `unlabeled/` folder alone is a class folder
        return {}
    return found


def _one_split(images: list[str], split: str, source: str) -> Layout:
    """The images of one split (rules 1-3 of the module docstring)."""
    prefix = _strip_wrappers(images)
    rel = [f[len(prefix) :] for f in images]
    split_dirs = _split_dirs(rel)
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
    labeled = wanted != "unlabeled" and all(t is not None for t in tops) and len(set(tops)) >= 2
    if not labeled:
        return Layout(files=sorted(prefix + f for f in rel), labels=None, classes=None)

    classes = sorted({t for t in tops if t is not None})
    index = {c: i for i, c in enumerate(classes)}
    pairs = sorted((index[t], prefix + f) for t, f in zip(tops, rel) if t is not None)
    return Layout(files=[f for _, f in pairs], labels=[c for c, _ in pairs], classes=classes)


def _joined(parts: list[str], layouts: list[Layout], source: str) -> Layout:
    """Rule 4: the splits one after the other; images of unlabeled parts get :data:`UNLABELED`."""
    classes = {tuple(lay.classes) for lay in layouts if lay.classes is not None}
    if len(classes) > 1:
        raise DataError(f"{source}: the splits {' and '.join(parts)} have different classes, so they cannot be joined")
    files = [f for lay in layouts for f in lay.files]
    if not classes:
        return Layout(files=files, labels=None, classes=None)
    labels = [y for lay in layouts for y in (lay.labels if lay.labels is not None else [UNLABELED] * len(lay.files))]
    return Layout(files=files, labels=labels, classes=list(classes.pop()))


def discover(files: list[str], split: str, source: str) -> Layout:
    """Select the images of ``split`` among ``files`` (store-relative paths) and assign labels."""
    images = [f for f in files if is_image_file(f)]
    if not images:
        exts = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DataError(f"no image files in {source}; expected files with extensions: {exts}")
    parts = [p.strip() for p in split.split("+")]
    if len(parts) == 1:
        return _one_split(images, split, source)
    canonical = [_SPLIT_ALIASES.get(p.lower(), p.lower()) for p in parts]
    if "" in parts or len(set(canonical)) < len(canonical):
        raise DataError(f"split {split!r}: join distinct splits with '+', e.g. train+unlabeled")
    return _joined(parts, [_one_split(images, p, source) for p in parts], source)

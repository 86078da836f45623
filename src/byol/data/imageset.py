"""The in-memory (or memory-mapped) image collection every other package consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    """Images as one uint8 tensor ``[N, C, H, W]`` (C is 1 or 3), with optional labels.

    ``images`` may wrap a memory-mapped ``.npy`` file (see :mod:`byol.data.cache`); the mapping is
    copy-on-write, so an in-place write changes only this process's copy and never the cache on disk.

    Attributes:
        images: uint8 ``[N, C, H, W]``.
        labels: int64 ``[N]``, or ``None`` for unlabeled data (flat folders, STL-10 ``unlabeled``). In a
            split joining labeled and unlabeled parts (``train+unlabeled``) the unlabeled images have -1.
        classes: class names indexed by label, or ``None`` when unlabeled.
        name: short name of the data set (``"cifar10"``, or the folder/zip name for user data).
        paths: for each image, its source file relative to the folder or zip it came from
            (``None`` for torchvision data sets, which have no files per image).
        skipped: source files that could not be decoded and were left out.
        skip_reasons: why each skipped file was left out (``skipped`` entry -> reason).
        converted: conversions some files needed (e.g. ``"CMYK to RGB"``) -> number of files.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] | None
    name: str
    paths: list[str] | None = None
    skipped: list[str] = field(default_factory=list)
    skip_reasons: dict[str, str] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"ImageSet.images must be uint8 [N, C, H, W] with C in (1, 3), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        n = self.images.shape[0]
        if self.labels is not None:
            if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
                raise ValueError(f"ImageSet.labels must be int64 [{n}], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.paths is not None and len(self.paths) != n:
            raise ValueError(f"ImageSet.paths has {len(self.paths)} entries for {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Image height in pixels (images are square whenever an ``image_size`` was requested)."""
        return int(self.images.shape[2])

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageSet:
        """A new ImageSet with the given images, in the given order (copied into memory)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        if idx.dim() != 1:
            raise ValueError(f"subset indices must be 1-D, got shape {tuple(idx.shape)}")
        return ImageSet(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            classes=None if self.classes is None else list(self.classes),
            name=self.name,
            paths=None if self.paths is None else [self.paths[i] for i in idx.tolist()],
            skipped=list(self.skipped),
            skip_reasons=dict(self.skip_reasons),
            converted=dict(self.converted),
        )

    def __repr__(self) -> str:
        n_cls = "unlabeled" if self.classes is None else f"{len(self.classes)} classes"
        return (
            f"ImageSet(name={self.name!r}, images={tuple(self.images.shape)}, {n_cls}, "
            f"skipped={len(self.skipped)})"
        )

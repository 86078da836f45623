"""Seeded, class-balanced label subsets for semi-supervised evaluation (the paper's 1% / 10% protocol).

The paper fine-tunes on SimCLR's fixed ImageNet 1% and 10% subsets. Here a subset is drawn from
the training split, **class-balanced** (every class gets the same number of labels, up to one more
for some classes when the total does not divide evenly; a class with too few images gives all it
has and the shortfall goes to the others) and **seeded** (same seed -> same subset; with one seed
the 1% subset is contained in the 10% subset: each class is a prefix of one seeded permutation).

A validation split for hyper-parameter selection is carved from the subset's **complement** in the
training split (images whose labels the protocol pretends not to have), never from the test split.
With 100% of the labels the complement is empty: validation is then held out of the labeled set
and the final model is refitted on all of it (``LabelSplit.refit``).

Indices are positions in the ``labels`` array given (the caller maps them to its data set).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from byol.atomic import atomic_write
from byol.errors import ConfigError, DataError
from byol.eval.splits import stratified_split

__all__ = ["LabelSpec", "LabelSplit", "parse_labels", "balanced_subset", "make_label_split"]

#: Cap on the validation split (the paper's ImageNet held-out split has 10,009 images).
MAX_VAL = 10_000


@dataclass(frozen=True)
class LabelSpec:
    """``fraction`` (0 < f <= 1) or ``count`` (>= 1) labeled images; ``text`` is what the user wrote."""

    text: str
    fraction: float | None = None
    count: int | None = None

    @property
    def tag(self) -> str:
        """File-name friendly form: ``1pct``, ``10pct``, ``100pct``, ``500``."""
        if self.fraction is not None:
            pct = f"{self.fraction * 100:g}".replace(".", "p")
            return f"{pct}pct"
        return str(self.count)

    def total(self, available: int) -> int:
        if self.count is not None:
            return self.count
        assert self.fraction is not None
        return max(1, int(round(self.fraction * available)))


_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_labels(value: str | int | LabelSpec) -> LabelSpec:
    """``"1%"``, ``"10%"``, ``"100%"``, ``"0.5%"`` (fractions) or ``"500"`` / ``500`` (a count)."""
    if isinstance(value, LabelSpec):
        return value
    text = str(value).strip()
    m = _PCT.match(text)
    if m:
        pct = float(m.group(1))
        if not 0.0 < pct <= 100.0:
            raise ConfigError(f"--labels {text}: a percentage must be in (0%, 100%]")
        return LabelSpec(text=text, fraction=pct / 100.0)
    if re.fullmatch(r"\d+", text):
        n = int(text)
        if n < 1:
            raise ConfigError(f"--labels {text}: a count must be at least 1")
        return LabelSpec(text=text, count=n)
    raise ConfigError(f"--labels {text!r}: expected a percentage like 1% or 10%, or a count like 500")


def _allocate(total: int, available: dict[int, int], generator: torch.Generator) -> dict[int, int]:
    """Split ``total`` over classes as evenly as their availability allows (water-filling)."""
    classes = sorted(available, key=lambda c: (available[c], c))
    quota: dict[int, int] = {}
    remaining = total
    for i, c in enumerate(classes):
        share = remaining // (len(classes) - i)
        quota[c] = min(available[c], share)
        remaining -= quota[c]
    if remaining:  # the leftover (< number of classes with spare room) goes one each, seeded order
        order = [classes[int(j)] for j in torch.randperm(len(classes), generator=generator)]
        for c in order:
            if remaining == 0:
                break
            if quota[c] < available[c]:
                quota[c] += 1
                remaining -= 1
    return quota


def _per_class(labels: Tensor, allowed: Tensor | None) -> dict[int, Tensor]:
    mask = torch.ones(labels.numel(), dtype=torch.bool) if allowed is None else allowed
    out = {}
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero((labels == c) & mask).flatten()
        out[int(c)] = idx
    return out


def balanced_subset(
    labels: Tensor, spec: str | int | LabelSpec, *, seed: int = 0, allowed: Tensor | None = None
) -> Tensor:
    """Sorted indices of a seeded class-balanced subset of ``labels`` (int64 ``[N]``).

    ``allowed`` (bool ``[N]``) restricts the candidates. Raises :class:`DataError` if more labels
    are asked for than there are candidates.
    """
    spec = parse_labels(spec)
    labels = torch.as_tensor(labels).cpu().to(torch.int64)
    by_class = _per_class(labels, allowed)
    available = {c: int(idx.numel()) for c, idx in by_class.items()}
    n_avail = sum(available.values())
    if n_avail == 0:
        raise DataError("no labeled images to draw a label subset from")
    total = spec.total(n_avail)
    if total > n_avail:
        raise DataError(f"--labels {spec.text}: asks for {total} labeled images but the training split has {n_avail}")
    g = torch.Generator().manual_seed(int(seed))
    # One permutation per class (in class order) *before* allocation: with a fixed seed, smaller
    # subsets are prefixes of larger ones.
    perms = {c: by_class[c][torch.randperm(available[c], generator=g)] for c in sorted(by_class)}
    quota = _allocate(total, available, g)
    parts = [perms[c][: quota[c]] for c in sorted(perms) if quota[c]]
    return torch.cat(parts).sort().values if parts else torch.empty(0, dtype=torch.int64)


@dataclass
class LabelSplit:
    """A label subset and its validation split (indices into the ``labels`` given)."""

    spec: LabelSpec
    seed: int
    labeled: Tensor  #: the images whose labels the protocol trains on
    val: Tensor  #: held out for hyper-parameter selection
    refit: bool  #: True when ``val`` lies inside ``labeled`` (100%): train on labeled minus val, refit on all
    per_class: dict[int, int] = field(default_factory=dict)  #: labeled count per class

    @property
    def select_train(self) -> Tensor:
        """What the hyper-parameter grid trains on (``labeled``, minus ``val`` when refitting)."""
        if not self.refit:
            return self.labeled
        keep = ~torch.isin(self.labeled, self.val)
        return self.labeled[keep]

    def to_json(self, **extra) -> dict:
        return {
            "labels": self.spec.text,
            "seed": self.seed,
            "n_labeled": int(self.labeled.numel()),
            "n_val": int(self.val.numel()),
            "val_from": "labeled subset (refit on all of it)" if self.refit else "complement of the labeled subset",
            "per_class": {str(k): v for k, v in sorted(self.per_class.items())},
            **extra,
            "labeled": self.labeled.tolist(),
            "val": self.val.tolist(),
        }

    def save(self, path: Path, **extra) -> Path:
        return atomic_write(path, json.dumps(self.to_json(**extra)))


def make_label_split(
    labels: Tensor,
    spec: str | int | LabelSpec,
    *,
    seed: int = 0,
    val_per_class: int | None = None,
    allowed: Tensor | None = None,
) -> LabelSplit:
    """Class-balanced labeled subset plus a class-balanced validation split from its complement.

    ``val_per_class`` defaults to the number of labels per class (at least 10), capped so that the
    validation split has at most :data:`MAX_VAL` images. If the complement is empty (100% of the
    labels), 10% of the labeled subset (stratified, at least one image of every class with two or
    more) is held out instead and ``refit`` is set. The validation draw uses ``seed + 1``.
    """
    spec = parse_labels(spec)
    labels = torch.as_tensor(labels).cpu().to(torch.int64)
    allowed_mask = torch.ones(labels.numel(), dtype=torch.bool) if allowed is None else allowed.clone()
    labeled = balanced_subset(labels, spec, seed=seed, allowed=allowed_mask)
    k = int(torch.unique(labels[allowed_mask]).numel())
    per_class = {int(c): int((labels[labeled] == c).sum()) for c in torch.unique(labels[labeled]).tolist()}
    rest = allowed_mask.clone()
    rest[labeled] = False
    if val_per_class is None:
        val_per_class = max(10, math.ceil(labeled.numel() / max(k, 1)))
        val_per_class = min(val_per_class, max(1, MAX_VAL // max(k, 1)))
    if val_per_class < 1:
        raise ConfigError(f"val_per_class must be >= 1, got {val_per_class}")
    rest_by_class = _per_class(labels, rest)
    if sum(int(v.numel()) for v in rest_by_class.values()) > 0:
        avail = {c: int(v.numel()) for c, v in rest_by_class.items() if v.numel()}
        total = min(val_per_class * len(avail), sum(avail.values()))
        val = balanced_subset(labels, LabelSpec(text=str(total), count=total), seed=seed + 1, allowed=rest)
        return LabelSplit(spec, seed, labeled, val, refit=False, per_class=per_class)
    # 100% of the labels: hold validation out of the labeled subset, then refit on all of it.
    _, held = stratified_split(labels[labeled], 0.1, seed + 1)
    if held.numel() == 0:
        raise DataError("too few labeled images to hold out a validation split")
    return LabelSplit(spec, seed, labeled, labeled[held], refit=True, per_class=per_class)

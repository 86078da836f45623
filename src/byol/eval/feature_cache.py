"""A disk cache of frozen features, so several evaluations of one checkpoint share one extraction.

Layout: ``<cache_dir>/<dataset>-<split>-<size>px-<key hash>.npy`` (float32 ``[N, D]``) with a
``.json`` beside it that spells the key out. ``cache_dir`` is normally ``<run dir>/eval/features/``.

The key is everything the features depend on: the encoder's fingerprint (for a checkpoint file
:func:`file_fingerprint`: SHA-256 of its first MiB plus its size in bytes, which is fast on large
checkpoints and distinguishes checkpoints of one run, whose tensors differ from the first bytes on;
a file rewritten with identical size and first MiB would be a false hit), the data set, the split,
the input size, the normalisation, the channel conversion and the number of images. Files are
written atomically (temp file + rename); a corrupt or mismatched file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from byol.atomic import atomic_write
from byol.eval.features import extract_features

__all__ = ["file_fingerprint", "features_for", "feature_key"]

FINGERPRINT_BYTES = 1 << 20


def file_fingerprint(path: str | Path, nbytes: int = FINGERPRINT_BYTES) -> str:
    """``sha256(first nbytes of the file + its size)`` as hex: a cheap identity for large checkpoints."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(nbytes))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()


def feature_key(**key: Any) -> tuple[str, dict[str, Any]]:
    """A stable hash of the key's JSON (sorted keys) and the JSON-ready key itself."""
    clean = json.loads(json.dumps(key, sort_keys=True, default=str))
    digest = hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()
    return digest, clean


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text)).strip("_.")
    return s[-40:] or "data"


def features_for(
    encoder: nn.Module,
    images: Tensor,
    *,
    cache_dir: str | Path | None,
    encoder_id: str,
    dataset: str,
    split: str,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    extra: dict[str, Any] | None = None,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[Tensor, bool]:
    """Features of ``images`` (uint8 ``[N, C, H, W]``) by ``encoder``, from the cache when possible.

    Returns ``(features float32 [N, D], hit)``. ``encoder_id`` identifies the weights (e.g. a
    :func:`file_fingerprint`); ``extra`` adds anything else the features depend on (e.g. the
    channel conversion applied to the images). ``cache_dir=None`` disables caching.
    """
    n = int(images.shape[0])
    digest, key = feature_key(
        encoder=encoder_id, dataset=dataset, split=split, size=int(size), mean=[float(m) for m in mean],
        std=[float(s) for s in std], n=n, channels=int(images.shape[1]), extra=extra or {},
    )
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_slug(dataset)}-{_slug(split)}-{int(size)}px-{digest[:16]}.npy"
        if path.is_file():
            try:
                arr = np.load(path)
                if arr.ndim == 2 and arr.shape[0] == n and arr.dtype == np.float32:
                    return torch.from_numpy(arr), True
            except (OSError, ValueError):
                pass
            warnings.warn(f"feature cache {path} is unreadable or stale: recomputing", stacklevel=2)
    feats = extract_features(encoder, images, size=size, mean=list(mean), std=list(std), batch_size=batch_size,
                             device=device, progress=progress)
    if path is not None:
        atomic_write(path, lambda f: np.save(f, feats.numpy()))
        atomic_write(path.with_suffix(".json"), json.dumps({"key": key, "sha256": digest, "shape": list(feats.shape)},
                                                           indent=1))
    return feats, False

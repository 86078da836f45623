"""Weighted k-nearest-neighbour classification on frozen features (cosine similarity).

Features are L2-normalised, so the dot product is the cosine similarity. For each test sample the
``max(k)`` most similar training samples are found once (test processed in chunks of
``batch_size``: at most ``batch_size x N_train`` similarities exist at a time); every requested
``k`` then uses the first ``k`` of them. Each neighbour votes for its label with weight

    ``weighting="exp"`` (default):  exp(sim / temperature)     (Wu et al. 2018, InstDisc; as in DINO)
    ``weighting="uniform"``:        1                          (plain majority vote)

and the class with the largest total wins (ties go to the smallest class index). Internally the
exponent is shifted by each row's largest similarity, ``exp((sim - max_sim) / temperature)``:
this multiplies all of a test sample's weights by the same constant, so the vote is unchanged,
but avoids float32 overflow for small temperatures.

If ``k`` exceeds the number of training samples, all of them are used (the key keeps the
requested ``k``). Result keys are ``"k{k}"`` (top-1 accuracy in %), e.g. ``{"k20": .., "k200": ..}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from byol.errors import ConfigError, DataError

__all__ = ["knn_eval", "knn_predict"]


def _prep(x: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-D [N, D] array, got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        t = t.float()
    return t


def _labels(y: Tensor | np.ndarray, n: int, name: str) -> Tensor:
    t = torch.as_tensor(y)
    if t.ndim != 1 or t.shape[0] != n:
        raise DataError(f"{name} must be 1-D with {n} entries, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise DataError(f"{name} must hold integer class indices, got {t.dtype}")
    t = t.to(torch.int64)
    if int(t.min()) < 0:
        raise DataError(f"{name} has negative class indices")
    return t


def _ks(k: int | Sequence[int]) -> list[int]:
    ks = [int(k)] if isinstance(k, (int, np.integer)) else [int(v) for v in k]
    if not ks or min(ks) < 1:
        raise ConfigError(f"k must be a positive integer or a non-empty list of them, got {k}")
    return list(dict.fromkeys(ks))  # unique, in the given order


@torch.no_grad()
def knn_predict(
    train_x: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray,
    test_x: Tensor | np.ndarray,
    *,
    k: int | Sequence[int] = (20, 200),
    temperature: float = 0.07,
    batch_size: int = 1024,
    num_classes: int | None = None,
    weighting: str = "exp",
) -> dict[int, Tensor]:
    """Predicted labels ``{k: int64 [N_test]}`` for every requested ``k`` (see module docstring)."""
    ks = _ks(k)
    if weighting not in ("exp", "uniform"):
        raise ConfigError(f"weighting must be 'exp' or 'uniform', got {weighting!r}")
    if weighting == "exp" and not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    tr = _prep(train_x, "train_x")
    te = _prep(test_x, "test_x")
    if tr.shape[1] != te.shape[1]:
        raise DataError(f"train and test features differ in width: {tr.shape[1]} vs {te.shape[1]}")
    ytr = _labels(train_y, tr.shape[0], "train_y").to(tr.device)
    if num_classes is None:
        num_classes = int(ytr.max()) + 1
    elif int(ytr.max()) >= num_classes:
        raise DataError(f"train labels exceed num_classes={num_classes}")
    tr = F.normalize(tr, dim=1)
    kmax = min(max(ks), tr.shape[0])
    preds = {kk: torch.empty(te.shape[0], dtype=torch.int64) for kk in ks}
    for start in range(0, te.shape[0], batch_size):
        q = F.normalize(te[start : start + batch_size].to(device=tr.device, dtype=tr.dtype), dim=1)
        sim, idx = (q @ tr.t()).topk(kmax, dim=1)  # sorted, most similar first
        nb_labels = ytr[idx]  # [b, kmax]
        if weighting == "exp":
            w = ((sim - sim[:, :1]) / temperature).exp_()
        else:
            w = torch.ones_like(sim)
        for kk in ks:
            kc = min(kk, kmax)
            votes = torch.zeros(q.shape[0], num_classes, dtype=w.dtype, device=w.device)
            votes.scatter_add_(1, nb_labels[:, :kc], w[:, :kc])
            preds[kk][start : start + q.shape[0]] = votes.argmax(dim=1).cpu()
    return preds


def knn_eval(
    train_x: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray,
    test_x: Tensor | np.ndarray,
    test_y: Tensor | np.ndarray,
    *,
    k: int | Sequence[int] = (20, 200),
    temperature: float = 0.07,
    batch_size: int = 1024,
    num_classes: int | None = None,
    weighting: str = "exp",
) -> dict[str, float]:
    """kNN top-1 accuracy (%) for each ``k``: ``{"k20": acc, "k200": acc}``.

    Cosine similarity, votes weighted by ``exp(sim / temperature)`` (or ``weighting="uniform"``);
    test processed in chunks of ``batch_size`` (memory ``batch_size * N_train`` floats).
    """
    te_n = torch.as_tensor(test_x).shape[0]
    yte = _labels(test_y, te_n, "test_y")
    preds = knn_predict(
        train_x,
        train_y,
        test_x,
        k=k,
        temperature=temperature,
        batch_size=batch_size,
        num_classes=num_classes,
        weighting=weighting,
    )
    return {f"k{kk}": 100.0 * (p == yte).double().mean().item() for kk, p in preds.items()}

"""Several encoders side by side on one labeled train/test pair: what ``byol demo`` reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from byol.eval.features import extract_features
from byol.eval.knn import knn_eval
from byol.eval.linear import linear_eval

__all__ = ["evaluate_encoders"]


def _features(encoder: nn.Module, images: Any, size: int, mean: Sequence[float], std: Sequence[float],
              device: torch.device | str) -> Tensor:
    return extract_features(encoder, torch.as_tensor(images), size=size, mean=mean, std=std, device=device)


def evaluate_encoders(
    encoders: dict[str, nn.Module], train: Any, test: Any, *, size: int, mean: Sequence[float],
    std: Sequence[float], device: torch.device | str, raw_pixels: bool = True, k: int = 20,
) -> dict[str, dict[str, float]]:
    """Linear (L-BFGS logistic regression on frozen features) and kNN (cosine, ``k``) top-1 for each
    encoder, plus a linear probe on raw pixels (``raw_pixels``). ``train``/``test`` are ImageSets.

    Returns ``{"linear": {name: top1}, "knn": {name: top1}}`` (percentages).
    """
    out: dict[str, dict[str, float]] = {"linear": {}, "knn": {}}
    for name, enc in encoders.items():
        ftr = _features(enc, train.images, size, mean, std, device)
        fte = _features(enc, test.images, size, mean, std, device)
        out["linear"][name] = float(linear_eval(ftr, train.labels, fte, test.labels)["top1"])
        knn = knn_eval(ftr, train.labels, fte, test.labels, k=(k,))
        out["knn"][name] = float(next(iter(knn.values())))
    if raw_pixels:
        xtr = torch.as_tensor(train.images).reshape(len(train), -1).float() / 255
        xte = torch.as_tensor(test.images).reshape(len(test), -1).float() / 255
        out["linear"]["raw_pixels"] = float(linear_eval(xtr, train.labels, xte, test.labels)["top1"])
    return out

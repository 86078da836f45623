"""Evaluation of backbones: feature extraction (+ a disk cache), L-BFGS linear probe, SGD linear
probe on augmented images, weighted kNN, fine-tuning on class-balanced label subsets, transfer
input adaptation, results cards.

Works with any backbone (``nn.Module``: float ``[B, C, H, W]`` -> ``[B, D]``); the protocols depend
only on ``torch``/``numpy``, ``byol.errors``, ``byol.schedules`` and ``byol.augment``
(``eval_transform``; ``apply_view`` for the SGD probe's crop + flip), not on ``byol.methods`` or
``byol.engine``.

The public names are imported on first use (PEP 562), so that reading results cards
(:mod:`byol.eval.cards`, used by ``byol report``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from byol.eval.cache import features_for, file_fingerprint
    from byol.eval.features import extract_features
    from byol.eval.finetune import FinetuneSettings, finetune_eval
    from byol.eval.knn import knn_eval, knn_predict
    from byol.eval.linear import DEFAULT_L2_GRID, fit_logistic, linear_eval, paper_grid, predict_logits, standardize
    from byol.eval.linear_sgd import (
        PAPER_LR_GRID,
        LinearHeads,
        LinearSGDSettings,
        linear_sgd_eval,
        train_linear_heads,
    )
    from byol.eval.splits import stratified_split
    from byol.eval.subsets import LabelSplit, make_label_split, parse_labels
    from byol.eval.transfer import adapt_channels, convert_stats, plan_adaptation

_EXPORTS: dict[str, str] = {
    "DEFAULT_L2_GRID": "byol.eval.linear",
    "FinetuneSettings": "byol.eval.finetune",
    "LabelSplit": "byol.eval.subsets",
    "LinearHeads": "byol.eval.linear_sgd",
    "LinearSGDSettings": "byol.eval.linear_sgd",
    "PAPER_LR_GRID": "byol.eval.linear_sgd",
    "adapt_channels": "byol.eval.transfer",
    "convert_stats": "byol.eval.transfer",
    "extract_features": "byol.eval.features",
    "features_for": "byol.eval.cache",
    "file_fingerprint": "byol.eval.cache",
    "finetune_eval": "byol.eval.finetune",
    "fit_logistic": "byol.eval.linear",
    "knn_eval": "byol.eval.knn",
    "knn_predict": "byol.eval.knn",
    "linear_eval": "byol.eval.linear",
    "linear_sgd_eval": "byol.eval.linear_sgd",
    "make_label_split": "byol.eval.subsets",
    "paper_grid": "byol.eval.linear",
    "parse_labels": "byol.eval.subsets",
    "plan_adaptation": "byol.eval.transfer",
    "predict_logits": "byol.eval.linear",
    "standardize": "byol.eval.linear",
    "stratified_split": "byol.eval.splits",
    "train_linear_heads": "byol.eval.linear_sgd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'byol.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

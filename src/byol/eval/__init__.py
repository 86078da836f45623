"""Evaluation of backbones: feature extraction (+ a disk cache), L-BFGS linear probe, SGD linear
probe on augmented images, weighted kNN, fine-tuning on class-balanced label subsets, transfer
input adaptation, results cards.

The protocol functions work with any backbone (``nn.Module``: float ``[B, C, H, W]`` -> ``[B, D]``)
and depend only on ``torch``/``numpy``, ``byol.errors``, ``byol.optim.schedules`` and ``byol.augment``
(``eval_transform``; ``apply_view`` for the SGD probe's crop + flip), not on ``byol.methods`` or
``byol.train.loop``. Above them, :mod:`byol.eval.encoders` (which encoder), :mod:`byol.eval.data` (which
images) and :mod:`byol.eval.context` (:func:`prepare`: one set-up per evaluation) read run
directories and data sets through ``byol.run.files``, ``byol.models`` and ``byol.data``;
:mod:`byol.eval.protocols` holds the protocols by name (one module each), which run on a prepared context
and write their cards.

The public names are imported on first use (PEP 562), so that reading results cards
(:mod:`byol.eval.cards`, used by ``byol report``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from byol._lazy import lazy_exports

if TYPE_CHECKING:
    from byol.eval.feature_cache import features_for, file_fingerprint
    from byol.eval.compare import evaluate_encoders
    from byol.eval.context import EvalContext, prepare
    from byol.eval.data import DataOptions
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
    from byol.eval.protocols import run_finetune, run_knn, run_linear, run_linear_sgd, write_embedding
    from byol.eval.encoders import EncoderSource, SourceSpec, load_source
    from byol.eval.splits import stratified_split
    from byol.eval.subsets import LabelSplit, make_label_split, parse_labels
    from byol.eval.adapt import adapt_channels, convert_stats, plan_adaptation

_EXPORTS: dict[str, str] = {
    "DEFAULT_L2_GRID": "byol.eval.linear",
    "DataOptions": "byol.eval.data",
    "EncoderSource": "byol.eval.encoders",
    "EvalContext": "byol.eval.context",
    "SourceSpec": "byol.eval.encoders",
    "FinetuneSettings": "byol.eval.finetune",
    "LabelSplit": "byol.eval.subsets",
    "LinearHeads": "byol.eval.linear_sgd",
    "LinearSGDSettings": "byol.eval.linear_sgd",
    "PAPER_LR_GRID": "byol.eval.linear_sgd",
    "adapt_channels": "byol.eval.adapt",
    "convert_stats": "byol.eval.adapt",
    "evaluate_encoders": "byol.eval.compare",
    "extract_features": "byol.eval.features",
    "features_for": "byol.eval.feature_cache",
    "file_fingerprint": "byol.eval.feature_cache",
    "finetune_eval": "byol.eval.finetune",
    "fit_logistic": "byol.eval.linear",
    "knn_eval": "byol.eval.knn",
    "knn_predict": "byol.eval.knn",
    "linear_eval": "byol.eval.linear",
    "linear_sgd_eval": "byol.eval.linear_sgd",
    "load_source": "byol.eval.encoders",
    "make_label_split": "byol.eval.subsets",
    "paper_grid": "byol.eval.linear",
    "parse_labels": "byol.eval.subsets",
    "plan_adaptation": "byol.eval.adapt",
    "predict_logits": "byol.eval.linear",
    "prepare": "byol.eval.context",
    "run_finetune": "byol.eval.protocols",
    "run_knn": "byol.eval.protocols",
    "run_linear": "byol.eval.protocols",
    "run_linear_sgd": "byol.eval.protocols",
    "standardize": "byol.eval.linear",
    "stratified_split": "byol.eval.splits",
    "train_linear_heads": "byol.eval.linear_sgd",
    "write_embedding": "byol.eval.protocols",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

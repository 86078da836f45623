"""Evaluation of backbones: feature extraction (+ a disk cache), L-BFGS linear probe, SGD linear
probe on augmented images, weighted kNN, fine-tuning on class-balanced label subsets, transfer
input adaptation, export, results cards.

Works with any backbone (``nn.Module``: float ``[B, C, H, W]`` -> ``[B, D]``); depends only on
``torch``/``numpy``, ``byol.errors`` and ``byol.augment`` (``eval_transform``; ``apply_view`` for
the SGD probe's crop + flip), not on ``byol.methods`` or ``byol.engine``.
"""

from byol.eval.cache import features_for, file_fingerprint
from byol.eval.features import extract_features
from byol.eval.finetune import FinetuneSettings, finetune_eval
from byol.eval.knn import knn_eval, knn_predict
from byol.eval.linear import (
    DEFAULT_L2_GRID,
    fit_logistic,
    linear_eval,
    paper_grid,
    predict_logits,
    standardize,
)
from byol.eval.linear_sgd import PAPER_LR_GRID, LinearHeads, LinearSGDSettings, linear_sgd_eval, train_linear_heads
from byol.eval.splits import stratified_split
from byol.eval.subsets import LabelSplit, make_label_split, parse_labels
from byol.eval.transfer import adapt_channels, convert_stats, plan_adaptation

__all__ = [
    "DEFAULT_L2_GRID",
    "FinetuneSettings",
    "LabelSplit",
    "LinearHeads",
    "LinearSGDSettings",
    "PAPER_LR_GRID",
    "adapt_channels",
    "convert_stats",
    "extract_features",
    "features_for",
    "file_fingerprint",
    "finetune_eval",
    "fit_logistic",
    "knn_eval",
    "knn_predict",
    "linear_eval",
    "linear_sgd_eval",
    "make_label_split",
    "paper_grid",
    "parse_labels",
    "plan_adaptation",
    "predict_logits",
    "standardize",
    "stratified_split",
    "train_linear_heads",
]

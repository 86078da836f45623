"""Evaluation of frozen backbones: feature extraction, L-BFGS linear probe, weighted kNN.

Works with any backbone (``nn.Module``: float ``[B, C, H, W]`` -> ``[B, D]``); depends only on
``torch``/``numpy``, ``byol.errors`` and ``byol.augment.eval_transform`` (not on ``byol.methods`` or ``byol.engine``).
"""

from byol.eval.features import extract_features
from byol.eval.knn import knn_eval, knn_predict
from byol.eval.linear import (
    DEFAULT_L2_GRID,
    fit_logistic,
    linear_eval,
    paper_grid,
    predict_logits,
    standardize,
    stratified_split,
)

__all__ = [
    "DEFAULT_L2_GRID",
    "extract_features",
    "fit_logistic",
    "knn_eval",
    "knn_predict",
    "linear_eval",
    "paper_grid",
    "predict_logits",
    "standardize",
    "stratified_split",
]

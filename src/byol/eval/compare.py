"""Several encoders side by side on one labeled train/test pair: what ``byol demo`` reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from byol.eval.features import extract_features
from byol.eval.knn import knn_eval
from byol.eval.linear import linear_eval

__all__ = ["evaluate_encoders", "run_side_by_side"]


def _features(encoder: nn.Module, images: Any, size: int, mean: Sequence[float], std: Sequence[float],
              device: torch.device | str) -> Tensor:
    return extract_features(encoder, torch.as_tensor(images), size=size, mean=mean, std=std, device=device)


def run_side_by_side(jobs: dict[str, Callable[[], float]], device: torch.device | str) -> dict[str, float]:
    """Run independent probe fits, on CPU one per core with one torch thread each.

    Why: a linear probe's time is two skinny matrix products per L-BFGS step ([n, D] x [D, classes]),
    which do not get faster with a second thread (measured on 2 cores, 54,000 x 784 x 10: 45 / 41 ms
    with one thread, 34 / 48 ms with two), so two probes side by side take about the time of one.
    Each fit is single-threaded either way, so its result does not depend on what runs beside it.
    On an accelerator, or with one thread or one job, the jobs run one after another. ``jobs`` is
    ``{name: fit}``; put the longest first. Returns ``{name: result}`` in the jobs' order.
    """
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads < 2 or len(jobs) < 2:
        return {name: fit() for name, fit in jobs.items()}
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs)), thread_name_prefix="byol-probe") as pool:
            futures = {name: pool.submit(fit) for name, fit in jobs.items()}
            return {name: f.result() for name, f in futures.items()}
    finally:
        torch.set_num_threads(threads)


def evaluate_encoders(
    encoders: dict[str, nn.Module], train: Any, test: Any, *, size: int, mean: Sequence[float],
    std: Sequence[float], device: torch.device | str, raw_pixels: bool = True, k: int = 20,
) -> dict[str, dict[str, float]]:
    """Linear (L-BFGS logistic regression on frozen features) and kNN (cosine, ``k``) top-1 for each
    encoder, plus a linear probe on raw pixels (``raw_pixels``). ``train``/``test`` are ImageSets.
    The linear probes run side by side (:func:`run_side_by_side`).

    Returns ``{"linear": {name: top1}, "knn": {name: top1}}`` (percentages).
    """
    out: dict[str, dict[str, float]] = {"linear": {}, "knn": {}}
    feats: dict[str, tuple[Tensor, Tensor]] = {}
    for name, enc in encoders.items():
        ftr = _features(enc, train.images, size, mean, std, device)
        fte = _features(enc, test.images, size, mean, std, device)
        feats[name] = (ftr, fte)
        knn = knn_eval(ftr, train.labels, fte, test.labels, k=(k,))
        out["knn"][name] = float(next(iter(knn.values())))
    if raw_pixels:
        feats["raw_pixels"] = (torch.as_tensor(train.images).reshape(len(train), -1).float() / 255,
                               torch.as_tensor(test.images).reshape(len(test), -1).float() / 255)

    def probe(name: str) -> Callable[[], float]:
        ftr, fte = feats[name]
        return lambda: float(linear_eval(ftr, train.labels, fte, test.labels)["top1"])

    widest_first = sorted(feats, key=lambda name: -feats[name][0].shape[1])
    done = run_side_by_side({name: probe(name) for name in widest_first}, device)
    out["linear"] = {name: done[name] for name in feats}  # the encoders' order, raw pixels last
    return out

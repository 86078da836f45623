"""The evaluation protocols run on a prepared :class:`~byol.eval.context.EvalContext`: each fits,
scores, writes its results card and returns what it measured (``byol eval`` prints a line from it).

- :func:`run_linear`: L-BFGS logistic regression on frozen features (the paper's transfer linear
  protocol, App. D.2; also ``transfer --mode linear``);
- :func:`run_linear_sgd`: a linear layer trained with SGD on augmented crops (the ImageNet linear
  protocol, App. C.1);
- :func:`run_knn`: weighted kNN on frozen features;
- :func:`run_finetune`: fine-tuning on class-balanced label subsets with a supervised-from-scratch
  baseline (the semi-supervised protocol, Sec. 4.2 / App. C.2; also ``transfer --mode finetune``);
- :func:`write_embedding`: frozen features of one split to ``.npy`` + ``.csv`` (``byol embed``).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from byol.eval.context import EvalContext
from byol.eval.finetune import FinetuneSettings
from byol.eval.linear_sgd import LinearSGDSettings
from byol.eval.subsets import LabelSpec

__all__ = ["Outcome", "run_finetune", "run_knn", "run_linear", "run_linear_sgd", "write_embedding"]

Log = Callable[[str], None] | None


@dataclass
class Outcome:
    """What one protocol run measured: the protocol function's result, its card and the card's path."""

    result: dict[str, Any]  #: e.g. ``{"top1", "top5"?, "l2", ...}``; kNN: ``{"k20": .., "k200": ..}``
    card: dict[str, Any]
    path: Path


def _top(res: dict[str, Any]) -> dict[str, float]:
    return {k: res[k] for k in ("top1", "top5") if k in res}


def run_linear(ctx: EvalContext, *, protocol: str = "linear", l2_grid: str = "default") -> Outcome:
    """L-BFGS linear probe on (cached) frozen features; ``l2_grid`` ``default`` or ``paper`` (45 values)."""
    from byol.eval.linear import linear_eval, paper_grid

    ftr, fte, hits = ctx.features()
    t1 = time.perf_counter()
    res = linear_eval(ftr, ctx.data.train.labels, fte, ctx.data.test.labels,
                      l2_grid=paper_grid() if l2_grid == "paper" else None, seed=ctx.seed,
                      num_classes=ctx.data.num_classes)
    t2 = time.perf_counter()
    card = ctx.card(
        protocol, metrics=_top(res), splits=ctx.splits(val_fraction_for_l2=0.1),
        hyperparameters={"labels": "100%", "l2": res["l2"], "l2_grid": l2_grid,
                         "val_top1_by_l2": {f"{k:g}": v for k, v in res["val_top1_by_l2"].items()},
                         "size": ctx.plan.size, "feature_dim": res["dim"], "standardized": True},
        timing={"features_seconds": t1 - ctx.started, "fit_seconds": t2 - t1, "seconds": t2 - ctx.started},
        feature_cache_hits=hits,
    )
    return Outcome(res, card, ctx.write_card(card))


def run_knn(ctx: EvalContext, *, k: Sequence[int] = (20, 200), temperature: float = 0.07) -> Outcome:
    """Weighted (exp, cosine) kNN on (cached) frozen features, one accuracy per ``k``."""
    from byol.eval.knn import knn_eval

    ftr, fte, hits = ctx.features()
    t1 = time.perf_counter()
    res = knn_eval(ftr, ctx.data.train.labels, fte, ctx.data.test.labels, k=k, temperature=temperature,
                   num_classes=ctx.data.num_classes)
    t2 = time.perf_counter()
    card = ctx.card(
        "knn", metrics=res,
        hyperparameters={"labels": "100%", "k": list(k), "temperature": temperature, "weighting": "exp",
                         "similarity": "cosine", "size": ctx.plan.size},
        timing={"features_seconds": t1 - ctx.started, "fit_seconds": t2 - t1, "seconds": t2 - ctx.started},
        feature_cache_hits=hits,
    )
    return Outcome(res, card, ctx.write_card(card))


def _augment_text(settings: LinearSGDSettings) -> str:
    lo, hi = settings.crop_scale
    return f"random resized crop (area {lo:g}-{hi:g}) + flip" if settings.augment else "none"


def run_linear_sgd(ctx: EvalContext, settings: LinearSGDSettings, *, protocol: str = "linear-sgd",
                   progress: bool = False, log: Log = None) -> Outcome:
    """The SGD linear probe (:func:`byol.eval.linear_sgd.linear_sgd_eval`) on the context's images."""
    from byol.eval.linear_sgd import linear_sgd_eval

    data, aug = ctx.data, _augment_text(settings)
    if log:
        grid = " ".join(f"{v:g}" for v in settings.lrs)
        log(f"{protocol} on {data.name}: {len(data.train)} train, {len(data.test)} test; {settings.epochs:g} epochs, "
            f"batch {settings.batch_size}, base lrs {grid}"
            + (f" (chosen on a stratified {settings.val_fraction:.0%} of train, then refit on all of it)"
               if len(settings.lrs) > 1 else "") + f"; train augmentation: {aug}")
    res = linear_sgd_eval(ctx.source.encoder, ctx.labeled("train"), ctx.labeled("test"), num_classes=data.num_classes,
                          size=ctx.plan.size, mean=ctx.plan.mean, std=ctx.plan.std, settings=settings, seed=ctx.seed,
                          device=ctx.device, progress=progress, log=log)
    splits = ctx.splits(val=res["n_val"])
    if res["n_val"]:
        splits["val_from"] = (f"stratified {settings.val_fraction:.0%} of train (seed {ctx.seed}), "
                              + ("then refit on all of train" if res["refit"] else "not refitted"))
    card = ctx.card(
        protocol, metrics=_top(res), splits=splits,
        hyperparameters={"labels": "100%", "lr": res["lr"], "lr_effective": res["lr_effective"],
                         "lr_grid": list(settings.lrs), "lr_scaling": "base * batch_size / 256",
                         "val_top1_by_lr": {f"{k:g}": v for k, v in res["val_top1_by_lr"].items()},
                         "epochs": settings.epochs, "steps": res["steps"], "batch_size": settings.batch_size,
                         "optimizer": "sgd-nesterov", "momentum": settings.momentum, "schedule": "cosine",
                         "weight_decay": settings.weight_decay, "augment": aug, "test_view": "whole image resized",
                         "standardized": settings.standardize, "bn": "eval mode (frozen encoder)",
                         "size": ctx.plan.size, "feature_dim": res["dim"], "final_loss": res["final_loss"]},
        timing={"seconds": time.perf_counter() - ctx.started, "fit_seconds": res["seconds"]},
    )
    return Outcome(res, card, ctx.write_card(card))


def run_finetune(ctx: EvalContext, specs: Sequence[LabelSpec], settings: FinetuneSettings, *,
                 protocol: str = "finetune", val_per_class: int | None = None, baseline: bool = True,
                 log: Log = None) -> Iterator[Outcome]:
    """Fine-tune the encoder (and, with ``baseline``, its scratch twin ``ctx.source.make_scratch``) on a
    class-balanced labeled subset of train for each of ``specs``; one :class:`Outcome` (and card, and
    label-subset file) per spec, in order. The encoder itself is never modified (each run trains a copy)."""
    xall, yall = ctx.labeled("train")
    test = ctx.labeled("test")
    for spec in specs:
        yield _finetune_subset(ctx, spec, settings, xall, yall, test, protocol=protocol, val_per_class=val_per_class,
                               baseline=baseline, log=log)


def _write_subset(ctx: EvalContext, split: Any, spec: LabelSpec, protocol: str) -> Path:
    """The label subset as positions in the data set's train split (JSON next to the cards)."""
    data = ctx.data
    path = ctx.out_dir / f"labels-{Path(ctx.card_name(protocol, spec.tag)).stem}-seed{ctx.seed}.json"
    payload = split.to_json(dataset=data.name, test_from=data.test_note,
                            indices="positions in the data set's train split")
    payload["labeled"] = data.train_index[split.labeled].tolist()
    payload["val"] = data.train_index[split.val].tolist()
    if data.test_index is not None:
        payload["test"] = data.test_index.tolist()
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def _finetune_subset(ctx: EvalContext, spec: LabelSpec, settings: FinetuneSettings, xall: Tensor, yall: Tensor,
                     test: tuple[Tensor, Tensor], *, protocol: str, val_per_class: int | None, baseline: bool,
                     log: Log) -> Outcome:
    from byol.eval.finetune import finetune_eval
    from byol.eval.subsets import make_label_split

    t0 = time.perf_counter()
    say = log or (lambda _: None)
    split = make_label_split(yall, spec, seed=ctx.seed, val_per_class=val_per_class)
    sub_path = _write_subset(ctx, split, spec, protocol)
    train, val = (xall[split.select_train], yall[split.select_train]), (xall[split.val], yall[split.val])
    say(f"{protocol} on {ctx.data.name}, labels {spec.text}: {len(split.labeled)} labeled, {len(split.val)} val "
        f"({'held out of the labeled set, refit' if split.refit else 'from the unlabeled rest'}), "
        f"{len(test[0])} test; subset: {sub_path}")
    kw = dict(num_classes=ctx.data.num_classes, size=ctx.plan.size, mean=ctx.plan.mean, std=ctx.plan.std,
              settings=settings, seed=ctx.seed, device=ctx.device, refit=split.refit, log=log)
    say(f" {ctx.source.label} encoder:")
    res = finetune_eval(ctx.source.encoder, train, val, test, **kw)
    scratch = None
    if baseline:
        say(" supervised from scratch (same architecture, random init):")
        bres = finetune_eval(ctx.source.make_scratch, train, val, test, **kw)
        scratch = {"name": "scratch", "metrics": _top(bres), "lr": bres["lr"], "weight_decay": bres["weight_decay"],
                   "val_top1_by_setting": bres["val_top1_by_setting"], "seconds": bres["seconds"]}
    card = ctx.card(
        protocol, metrics=_top(res),
        splits=ctx.splits(labeled=len(split.labeled), val=len(split.val), val_from=(
            "labeled subset (refit on all of it)" if split.refit else "complement of the labeled subset in train"),
            per_class=split.per_class),
        hyperparameters={"labels": spec.text, "lr": res["lr"], "weight_decay": res["weight_decay"],
                         "lr_grid": list(settings.lrs), "weight_decay_grid": list(settings.weight_decays),
                         "val_top1_by_setting": res["val_top1_by_setting"], "epochs": settings.epochs,
                         "steps": res["steps"], "batch_size": settings.batch_size, "optimizer": "sgd-nesterov",
                         "momentum": settings.momentum, "schedule": "cosine", "augment": settings.augment,
                         "bn": "train mode", "size": ctx.plan.size},
        timing={"seconds": time.perf_counter() - t0, "byol_seconds": res["seconds"]},
        label_subset=str(sub_path), baseline=scratch,
    )
    return Outcome(res, card, ctx.write_card(card, spec.tag))


def write_embedding(ctx: EvalContext, out: str | Path) -> tuple[Path, Path, tuple[int, ...]]:
    """Frozen features of the context's one split to ``out`` (``.npy``, suffix added if missing) and
    ``index,path,label`` rows to a ``.csv`` beside it; returns both paths and the features' shape."""
    from byol.eval.features import extract_features

    images = ctx.data.train
    feats = extract_features(ctx.source.encoder, ctx.images("train"), size=ctx.plan.size, mean=list(ctx.plan.mean),
                             std=list(ctx.plan.std), batch_size=ctx.batch_size, device=ctx.device)
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats.numpy())
    csv_path = out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "label"])
        for i in range(len(images)):
            label = ""
            if images.labels is not None:
                y = int(images.labels[i])
                label = images.classes[y] if images.classes else str(y)
            w.writerow([i, images.paths[i] if images.paths is not None else "", label])
    return out, csv_path, tuple(feats.shape)

"""``byol eval finetune``: fine-tuning on class-balanced label subsets with a supervised-from-scratch
baseline (the semi-supervised protocol, Sec. 4.2 / App. C.2; also ``transfer --mode finetune``), the maths
in :mod:`byol.eval.finetune`, the subsets in :mod:`byol.eval.subsets`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byol.atomic import atomic_write
from byol.errors import ConfigError
from byol.eval.protocols.registry import Log, Outcome, Protocol, register, top_metrics

if TYPE_CHECKING:
    from torch import Tensor

    from byol.eval.context import EvalContext
    from byol.eval.finetune import FinetuneSettings
    from byol.eval.subsets import LabelSpec

__all__ = ["FINETUNE_ONLY", "FinetuneOptions", "FinetuneProtocol", "add_finetune_arguments", "finetune_options",
           "finetune_settings", "run_finetune"]


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
    return atomic_write(path, json.dumps(payload))


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
        scratch = {"name": "scratch", "metrics": top_metrics(bres), "lr": bres["lr"],
                   "weight_decay": bres["weight_decay"], "val_top1_by_setting": bres["val_top1_by_setting"],
                   "seconds": bres["seconds"]}
    card = ctx.card(
        protocol, metrics=top_metrics(res),
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


# ----------------------------------------------------------------------------------------------
# the command-line entry (shared with ``eval transfer --mode finetune``)


def add_finetune_arguments(p: argparse.ArgumentParser, *, labels_default: list[str],
                           steps_default: int | None) -> None:
    # Every default is None (False for switches) so that a flag the user gave can be told from one they did
    # not; the defaults (FinetuneSettings' and these) are applied in finetune_settings.
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--labels", nargs="+", default=None, metavar="SPEC",
                   help="labeled share(s) of train: 1%%, 10%%, 100%% or a count like 500 "
                        f"(default: {' '.join(labels_default).replace('%', '%%')})")
    g.add_argument("--lrs", nargs="+", type=float, default=None,
                   help="learning-rate grid, chosen on the validation split (default 0.01 0.03 0.1 0.3)")
    g.add_argument("--weight-decays", nargs="+", type=float, default=None, help="weight-decay grid (default 0)")
    g.add_argument("--epochs", type=float, default=None,
                   help="epochs over the labeled subset" + ("" if steps_default else " (default 30)"))
    g.add_argument("--steps", type=int, default=None,
                   help="total optimizer steps instead of --epochs"
                        + (f" (default {steps_default} when neither is given)" if steps_default else ""))
    g.add_argument("--ft-batch-size", type=int, default=None, help="fine-tuning batch size (default 128)")
    g.add_argument("--val-per-class", type=int, default=None,
                   help="validation images per class (default: labels per class, at least 10)")
    g.add_argument("--no-augment", action="store_true", help="no random crop + flip while fine-tuning")
    g.add_argument("--no-baseline", action="store_true", help="skip the supervised-from-scratch baseline")
    p.set_defaults(labels_default=labels_default, steps_default=steps_default)


#: the fine-tuning flags (attribute, flag): an error with ``eval transfer --mode linear``
FINETUNE_ONLY = (("labels", "--labels"), ("lrs", "--lrs"), ("weight_decays", "--weight-decays"),
                 ("epochs", "--epochs"), ("steps", "--steps"), ("ft_batch_size", "--ft-batch-size"),
                 ("val_per_class", "--val-per-class"), ("no_augment", "--no-augment"),
                 ("no_baseline", "--no-baseline"))


def finetune_settings(a: argparse.Namespace) -> FinetuneSettings:
    """The fine-tuning flags with their defaults filled in; ``--steps`` and ``--epochs`` are exclusive."""
    from byol.eval.finetune import FinetuneSettings

    if a.steps is not None and a.epochs is not None:
        raise ConfigError("--steps and --epochs both set how long to fine-tune: give one of them")
    d = FinetuneSettings()
    steps = a.steps if a.steps is not None else (a.steps_default if a.epochs is None else None)
    settings = FinetuneSettings(lrs=tuple(a.lrs or d.lrs), weight_decays=tuple(a.weight_decays or d.weight_decays),
                                epochs=a.epochs if a.epochs is not None else d.epochs, steps=steps,
                                batch_size=a.ft_batch_size if a.ft_batch_size is not None else d.batch_size,
                                augment=not a.no_augment)
    settings.validate()
    return settings


@dataclass(frozen=True)
class FinetuneOptions:
    """One ``eval finetune`` (or ``transfer --mode finetune``): which label subsets, how to fine-tune."""

    specs: tuple[LabelSpec, ...]
    settings: FinetuneSettings
    protocol: str = "finetune"  #: the cards' protocol
    val_per_class: int | None = None
    baseline: bool = True  #: also fine-tune the scratch twin


def finetune_options(a: argparse.Namespace, protocol: str) -> FinetuneOptions:
    from byol.eval.subsets import parse_labels

    specs = tuple(parse_labels(s) for s in a.labels or a.labels_default)  # fail fast on a bad --labels
    return FinetuneOptions(specs, finetune_settings(a), protocol, a.val_per_class, not a.no_baseline)


def run_options(ctx: EvalContext, o: FinetuneOptions, log: Log) -> Iterator[Outcome]:
    return run_finetune(ctx, o.specs, o.settings, protocol=o.protocol, val_per_class=o.val_per_class,
                        baseline=o.baseline, log=log)


def finetune_line(ctx: EvalContext, out: Outcome) -> str:
    """The printed line of one label subset: the encoder's top-1 (top-5), the scratch baseline's, the card."""
    line = f" => labels {out.card['hyperparameters']['labels']}: {ctx.source.label} top-1 {out.result['top1']:.2f}%"
    if "top5" in out.result:
        line += f" (top-5 {out.result['top5']:.2f}%)"
    if out.card["baseline"]:
        line += f"; scratch top-1 {out.card['baseline']['metrics']['top1']:.2f}%"
    return line + f"; card: {out.path}"


@register("finetune")
class FinetuneProtocol(Protocol):
    help = "semi-supervised: fine-tune on a class-balanced label subset (+ scratch baseline)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_finetune_arguments(p, labels_default=["1%", "10%"], steps_default=None)

    def settings(self, a: argparse.Namespace) -> FinetuneOptions:
        return finetune_options(a, "finetune")

    def trains_encoder(self, settings: FinetuneOptions) -> bool:
        return True

    def run(self, ctx: EvalContext, settings: FinetuneOptions, log: Log = None) -> Iterator[Outcome]:
        return run_options(ctx, settings, log)

    def line(self, ctx: EvalContext, settings: FinetuneOptions, out: Outcome) -> str:
        return finetune_line(ctx, out)

"""``byol eval linear``: a linear classifier on the frozen encoder.

- :func:`run_linear`: L-BFGS logistic regression on frozen features (the paper's transfer linear
  protocol, App. D.2; also ``transfer --mode linear``), the maths in :mod:`byol.eval.linear`;
- :func:`run_linear_sgd`: a linear layer trained with SGD on augmented crops (the ImageNet linear
  protocol, App. C.1; ``--protocol sgd``), the maths in :mod:`byol.eval.linear_sgd`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from byol.errors import ConfigError
from byol.eval.protocols.registry import (
    Log,
    Outcome,
    Protocol,
    given_flags,
    register,
    sizes_text,
    top5_text,
    top_metrics,
)

if TYPE_CHECKING:
    from byol.eval.context import EvalContext
    from byol.eval.linear_sgd import LinearSGDSettings

__all__ = ["LinearProtocol", "LinearSettings", "add_l2_grid_argument", "run_linear", "run_linear_sgd"]


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
        protocol, metrics=top_metrics(res), splits=ctx.splits(val_fraction_for_l2=0.1),
        hyperparameters={"labels": "100%", "l2": res["l2"], "l2_grid": l2_grid,
                         "val_top1_by_l2": {f"{k:g}": v for k, v in res["val_top1_by_l2"].items()},
                         "size": ctx.plan.size, "feature_dim": res["dim"], "standardized": True},
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
        protocol, metrics=top_metrics(res), splits=splits,
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


def add_l2_grid_argument(p: argparse.ArgumentParser, when: str) -> None:
    """``--l2-grid`` (default None, so that giving it where it does not apply is an error)."""
    p.add_argument("--l2-grid", choices=("default", "paper"), default=None,
                   help=f"{when}: default: 6 values in [1e-6, 0.1]; paper: 45 values in [1e-6, 1e5]")


def linear_line(protocol: str, ctx: EvalContext, res: dict[str, Any], path: Any) -> str:
    """The printed line of an L-BFGS probe (``eval linear`` and ``eval transfer --mode linear``)."""
    return (f"{protocol} on {ctx.data.name}: top-1 {res['top1']:.2f}%{top5_text(res)} (l2={res['l2']:g}, "
            f"{sizes_text(ctx)}); card: {path}")


#: the SGD probe's flags (attribute, flag): an error with ``--protocol lbfgs``
_SGD_ONLY = (("epochs", "--epochs"), ("sgd_batch_size", "--sgd-batch-size"), ("lrs", "--lrs"),
             ("crop_scale", "--crop-scale"), ("no_augment", "--no-augment"), ("no_standardize", "--no-standardize"))


@dataclass(frozen=True)
class LinearSettings:
    """``eval linear``: the L-BFGS probe with its l2 grid, or (``sgd`` set) the SGD probe."""

    l2_grid: str = "default"  #: ``default`` or ``paper``
    sgd: LinearSGDSettings | None = None  #: ``--protocol sgd``
    progress: bool = True  #: the SGD probe's progress bar


@register("linear")
class LinearProtocol(Protocol):

    help = ("frozen encoder + linear classifier: L-BFGS on features (default) "
            "or SGD on augmented crops (--protocol sgd)")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--protocol", dest="linear_protocol", choices=("lbfgs", "sgd"), default="lbfgs",
                       help="lbfgs (default): logistic regression on un-augmented features, l2 chosen on a val split "
                            "(the paper's transfer protocol); sgd: a linear layer trained with SGD on random "
                            "crop + flip views (the paper's ImageNet protocol)")
        add_l2_grid_argument(p, "--protocol lbfgs")
        g = p.add_argument_group("--protocol sgd")
        g.add_argument("--epochs", type=float, default=None, help="epochs over train (default 10; paper 80)")
        g.add_argument("--sgd-batch-size", type=int, default=None, help="SGD batch size (default 256; paper 1024)")
        g.add_argument("--lrs", nargs="+", type=float, default=None, metavar="LR",
                       help="base learning-rate grid, lr = base * batch / 256, chosen on a val split "
                            "(default: the paper's 0.4 0.3 0.2 0.1 0.05)")
        g.add_argument("--crop-scale", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                       help="area range of the random resized crop (default 0.08 1)")
        g.add_argument("--no-augment", action="store_true", help="train on the un-augmented view (no crop + flip)")
        g.add_argument("--no-standardize", action="store_true",
                       help="feed raw features to the layer (default: standardised with training statistics)")
        g.add_argument("--no-progress", action="store_true", help="no progress bar")

    def settings(self, a: argparse.Namespace) -> LinearSettings:
        if getattr(a, "linear_protocol", "lbfgs") != "sgd":
            given = given_flags(a, _SGD_ONLY)
            if given:
                raise ConfigError(f"{', '.join(given)} only apply to `--protocol sgd` (this is --protocol lbfgs)")
            return LinearSettings(l2_grid=getattr(a, "l2_grid", None) or "default")
        from byol.eval.linear_sgd import LinearSGDSettings

        if a.l2_grid is not None:
            raise ConfigError("--l2-grid only applies to --protocol lbfgs; --protocol sgd chooses among --lrs")
        d = LinearSGDSettings()
        settings = LinearSGDSettings(
            lrs=tuple(a.lrs) if a.lrs else d.lrs,
            epochs=a.epochs if a.epochs is not None else d.epochs,
            batch_size=a.sgd_batch_size if a.sgd_batch_size is not None else d.batch_size,
            crop_scale=tuple(a.crop_scale) if a.crop_scale else d.crop_scale,
            augment=not a.no_augment, standardize=not a.no_standardize,
            eval_batch_size=max(1, a.batch_size),
        )
        settings.validate()  # before loading anything
        return LinearSettings(sgd=settings, progress=not a.no_progress)

    def run(self, ctx: EvalContext, settings: LinearSettings, log: Log = None) -> list[Outcome]:
        if settings.sgd is not None:
            return [run_linear_sgd(ctx, settings.sgd, progress=settings.progress, log=log)]
        return [run_linear(ctx, l2_grid=settings.l2_grid)]

    def line(self, ctx: EvalContext, settings: LinearSettings, out: Outcome) -> str:
        res = out.result
        if settings.sgd is None:
            return linear_line("linear", ctx, res, out.path)
        return (f"linear-sgd on {ctx.data.name}: top-1 {res['top1']:.2f}%{top5_text(res)} (base lr {res['lr']:g}, "
                f"{res['steps']} steps; {sizes_text(ctx)}); card: {out.path}")

"""``byol eval knn``: weighted kNN on frozen features (the maths in :mod:`byol.eval.knn`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from byol.errors import ConfigError
from byol.eval.protocols.registry import Log, Outcome, Protocol, register

if TYPE_CHECKING:
    from byol.eval.context import EvalContext

__all__ = ["KnnProtocol", "KnnSettings", "run_knn"]


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


@dataclass(frozen=True)
class KnnSettings:
    k: tuple[int, ...] = (20, 200)  #: one accuracy per neighbour count
    temperature: float = 0.07  #: the weights are ``exp(similarity / temperature)``


@register("knn")
class KnnProtocol(Protocol):
    help = "frozen features, weighted kNN (cosine)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--k", nargs="+", type=int, default=[20, 200])
        p.add_argument("--temperature", type=float, default=0.07)

    def settings(self, a: argparse.Namespace) -> KnnSettings:
        if not a.k or min(a.k) < 1:
            raise ConfigError(f"--k must be positive integers, got {a.k}")
        return KnnSettings(k=tuple(a.k), temperature=a.temperature)

    def run(self, ctx: EvalContext, settings: KnnSettings, log: Log = None) -> list[Outcome]:
        return [run_knn(ctx, k=settings.k, temperature=settings.temperature)]

    def line(self, ctx: EvalContext, settings: KnnSettings, out: Outcome) -> str:
        accs = ", ".join(f"k={k[1:]}: {v:.2f}%" for k, v in out.result.items())
        return f"knn on {ctx.data.name}: {accs}; card: {out.path}"

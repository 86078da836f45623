"""The end-of-run verdict: is the pretrained encoder better than the same architecture at random init?

A self-supervised run can finish without error and still have learned nothing useful (collapse, a recipe
that does not fit the data). The one comparison that says so on any labeled data set is against the
random-init floor: both encoders are scored by the same kNN classifier (k = :data:`K`, cosine, votes
weighted by ``exp(sim / 0.07)``) on the same images, resized and normalised the same way. The floor is
the fair one (:mod:`byol.eval.floor`): the random network is scored twice, with BatchNorm's initial
running statistics and with statistics recalibrated on the bank's images (never the queries), and the
encoder is held to the stronger of the two; both are reported.

The images are the run's labeled *training* images, never a test split: a stratified, seeded
:data:`HELD_OUT` of them are the queries (at most :data:`MAX_QUERIES`), the rest the bank (at most
:data:`MAX_BANK`). Pretraining saw the queries too, without labels, as it saw every training image.

The encoder is *better* when it beats random init by at least :func:`margin` points: two standard errors
of the difference of two accuracies near 50% measured on the queries (``141 / sqrt(queries)``), and never
less than :data:`MIN_MARGIN`. The run *passes* when the encoder is better and the collapse monitor's last
reading is not a collapse: a run whose projections collapsed stopped learning, and its encoder keeps only
what it learned before (on small generated data that was often still better than random init by kNN).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from byol.eval import extract_features, knn_eval
from byol.eval.floor import VARIANTS, recalibrate_bn, stronger
from byol.eval.splits import stratified_split
from byol.train.monitor import collapse_reason, labeled_positions

K = 20  #: neighbours of the verdict's kNN classifier
HELD_OUT = 0.1  #: share of the labeled training images held out as queries (stratified)
MAX_QUERIES = 2000  #: at most this many queries (a seeded random draw from the held-out share)
MAX_BANK = 10000  #: at most this many bank images (a seeded random draw from the rest)
MIN_MARGIN = 2.0  #: the smallest margin, in accuracy points
_CHUNK = 2048  #: images gathered at a time (the data may be a memory-mapped array far larger than RAM)


def margin(queries: int) -> float:
    """Points by which the encoder must beat random init: ``max(2, 100 * sqrt(2) / sqrt(queries))``."""
    return max(MIN_MARGIN, 100.0 * math.sqrt(2.0 / max(queries, 1)))


def verdict_split(labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """``(bank, queries)``: sorted positions into ``labels`` (images labeled -1 are in neither)."""
    labeled = labeled_positions(labels)
    keep, held = stratified_split(torch.as_tensor(labels)[labeled], HELD_OUT, seed, name="verdict held-out share")
    g = torch.Generator().manual_seed(seed)
    queries = held[torch.randperm(len(held), generator=g)[:MAX_QUERIES]]
    bank = keep[torch.randperm(len(keep), generator=g)[:MAX_BANK]]
    return labeled[bank.sort().values], labeled[queries.sort().values]


def _features(encoders: list[nn.Module], images: Tensor, index: Tensor, **kw: Any) -> list[Tensor]:
    """Features of ``images[index]`` under each encoder, gathered :data:`_CHUNK` images at a time."""
    parts: list[list[Tensor]] = [[] for _ in encoders]
    for idx in index.split(_CHUNK):
        batch = torch.as_tensor(images[idx])
        for out, enc in zip(parts, encoders):
            out.append(extract_features(enc, batch, **kw))
    return [torch.cat(p) for p in parts]


def random_init_verdict(
    encoder: nn.Module, random_encoder: nn.Module, images: Tensor, labels: Tensor, *, size: int, mean: list[float],
    std: list[float], device: torch.device, seed: int, name: str = "BYOL", collapse: dict[str, float] | None = None,
) -> dict[str, Any]:
    """kNN top-1 (%) of ``encoder`` and ``random_encoder`` on held-out training images, whether the encoder
    is better by :func:`margin`, and whether the run passes (better, and ``collapse``, the collapse monitor's
    last reading if any, is not a collapse); ``{"skipped": reason}`` when there is nothing to compare on."""
    bank, queries = verdict_split(labels, seed)
    classes = int(torch.unique(torch.as_tensor(labels)[bank]).numel()) if len(bank) else 0
    if len(queries) == 0 or classes < 2:
        return {"skipped": "too few labeled images: the verdict needs two classes with at least two images each"}
    kw = dict(size=size, mean=mean, std=std, device=device)
    recalibrated = recalibrate_bn(random_encoder, images, **kw, seed=seed, pool=bank)
    encoders = [encoder, random_encoder, recalibrated]
    fb, fq = _features(encoders, images, bank, **kw), _features(encoders, images, queries, **kw)
    y = torch.as_tensor(labels)
    acc = [knn_eval(b, y[bank], q, y[queries], k=(K,))[f"k{K}"] for b, q in zip(fb, fq)]
    floors = {VARIANTS[0]: round(acc[1], 2), VARIANTS[1]: round(acc[2], 2)}
    variant, floor = stronger(floors)
    gain, need = acc[0] - floor, margin(len(queries))
    reason = collapse_reason(collapse) if collapse is not None else None
    collapsed = reason is not None
    out = {"name": name, "encoder_knn": round(acc[0], 2), "random_init_knn": floor, "floor": variant,
           "random_init_variants": floors, "gain": round(gain, 2),
           "margin": round(need, 2), "better": bool(gain >= need), "collapsed": collapsed,
           "passed": bool(gain >= need and not collapsed), "k": K, "queries": len(queries), "bank": len(bank),
           "held_out": f"{HELD_OUT:.0%} of train", "seed": seed, "chance": round(100.0 / classes, 2)}
    if collapse is not None:
        out.update(z_std=collapse["z_std"], z_std_ref=collapse["z_std_ref"])
        if "code_entropy" in collapse:
            out["code_entropy"] = collapse["code_entropy"]
    if reason is not None:
        out["collapse"] = reason.split(": ", 1)[0]  # "representation collapse suspected" / "code collapse ..."
    return out


def verdict_lines(verdict: dict[str, Any]) -> list[str]:
    """What to print: the comparison in one line, then a warning line for each reason the run fails."""
    if "skipped" in verdict:
        return [f"verdict: skipped ({verdict['skipped']})"]
    v = verdict
    other = {k: x for k, x in v.get("random_init_variants", {}).items() if k != v.get("floor")}
    aside = "".join(f"; {k} {x:.1f}%" for k, x in other.items())
    lines = [f"{v['name']} encoder: {v['encoder_knn']:.1f}% kNN, random init {v['random_init_knn']:.1f}% "
             f"({v.get('floor', VARIANTS[0])}{aside}): {v['gain']:+.1f} (held-out {v['held_out']}: "
             f"{v['queries']} queries, bank {v['bank']}; k={v['k']})"]
    if not v["better"]:
        lines.append(f"warning: the {v['name']} encoder is not better than random init by the margin of "
                     f"{v['margin']:.1f} points on this data: its features do not help yet (train longer, look "
                     f"for collapse in metrics.jsonl, or adapt the recipe to these images)")
    if v["collapsed"] and v.get("collapse", "").startswith("code"):
        lines.append(f"warning: this run failed: its codes collapsed (mean normalized entropy "
                     f"{v['code_entropy']:.4f} at the end, 1 = every code uniform over the prototypes), so the "
                     f"encoder stopped learning early whatever its kNN; see the collapse warning for what to try")
    elif v["collapsed"]:
        lines.append(f"warning: this run failed: its projections collapsed (per-dimension std {v['z_std']:.4f} at "
                     f"the end, healthy is about {v['z_std_ref']:.4f}), so the encoder stopped learning early "
                     f"whatever its kNN; see the collapse warning for the usual causes")
    return lines

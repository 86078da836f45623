"""A study's records -> its results: the mean (and spread) of each metric over seeds, per cell."""

from __future__ import annotations

import statistics
from typing import Any

from byol.reproduce.studies import Results, Study

METRICS = ("knn", "linear")


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(study: Study, records: dict[str, list[dict[str, Any]]]) -> Results:
    """Cell key -> mean of each metric over seeds (+ ``*_sd``, ``collapsed`` share, ``epochs``, ``n``)."""
    out: Results = {}
    for cell in study.cells:
        recs = records.get(cell.key) or []
        if not recs:
            continue
        row: dict[str, float] = {"n": float(len(recs))}
        for m in METRICS:
            row[m], row[f"{m}_sd"] = _mean_sd([float(r[m]) for r in recs])
        row["collapsed"] = sum(bool(r.get("collapsed")) for r in recs) / len(recs)
        row["epochs"] = statistics.fmean(float(r.get("epochs", 0.0)) for r in recs)
        row["wall"] = sum(float(r.get("wall_seconds", 0.0)) for r in recs)
        out[cell.key] = row
    return out

"""Runs side by side against wall time: each run's online kNN (``metrics.jsonl``) at its training seconds.

Two methods compared "at equal wall time" agree only at the end of their budget; the curve says whether the
order holds at every shorter budget too (the gap against length). Each evaluation row of ``metrics.jsonl``
carries ``elapsed_s``, the training seconds before it ran (earlier evaluations included: the budget counts
them too). Rows of runs logged before ``elapsed_s`` existed are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from byol.reports.plots import read_metrics, save_figure

__all__ = ["Curve", "knn_curve", "value_at", "curves_table", "plot_knn_curves"]

#: (training seconds, epoch, online kNN top-1 %) per evaluation
Curve = list[tuple[float, float, float]]


def knn_curve(run_dir: str | Path) -> Curve:
    """The run's online kNN evaluations, in order, as (seconds, epoch, top-1)."""
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    return [(float(r["elapsed_s"]), float(r["epoch"]), float(r["knn_top1"]))
            for r in rows if "knn_top1" in r and "elapsed_s" in r]


def value_at(curve: Curve, seconds: float) -> float | None:
    """Top-1 of the last evaluation at or before ``seconds`` (what a run stopped then would have had)."""
    seen = [knn for s, _, knn in curve if s <= seconds]
    return seen[-1] if seen else None


def curves_table(curves: Mapping[str, Curve], marks: Sequence[float] | None = None) -> str:
    """Markdown: one row per run, online kNN at each of ``marks`` seconds (default: every minute up to the
    longest run's last evaluation), the last one with its epoch."""
    end = max((c[-1][0] for c in curves.values() if c), default=0.0)
    if marks is None:
        marks = [60.0 * m for m in range(1, int(math.ceil(end / 60.0)) + 1)] or [end]
    head = ["run", *(f"{s / 60:g} min" for s in marks), "last (s, epoch, kNN)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, c in curves.items():
        cells = [f"{v:.2f}" if (v := value_at(c, s)) is not None else "-" for s in marks]
        last = f"{c[-1][0]:.0f} s, {c[-1][1]:.1f}, {c[-1][2]:.2f}" if c else "-"
        lines.append("| " + " | ".join([name, *cells, last]) + " |")
    return "\n".join(lines)


def plot_knn_curves(curves: Mapping[str, Curve], out_png: str | Path,
                    title: str = "online kNN against wall time") -> Path:
    """One line per run: online kNN top-1 against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, c in curves.items():
        if c:
            ax.plot([s / 60 for s, _, _ in c], [k for _, _, k in c], "o-", ms=3, lw=1.2, label=name)
    ax.set_xlabel("training minutes (evaluations included)")
    ax.set_ylabel("online kNN top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)

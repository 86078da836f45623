"""Plots of a run's metrics (PNG, via matplotlib's non-interactive backend)."""

from __future__ import annotations

import json
from pathlib import Path

from byol.atomic import atomic_write


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_figure(fig, out_png: Path | str) -> Path:
    """Lay out, write (atomically, creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png = Path(out_png)
    try:
        atomic_write(out_png, lambda f: fig.savefig(f, format=out_png.suffix.lstrip(".") or None))
    finally:
        plt.close(fig)
    return out_png


def plot_training_curves(metrics_path: Path, out_png: Path, title: str = "") -> Path:
    """Loss (left axis) and online kNN accuracy (right axis) against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    loss = [(r["epoch"], r["loss"]) for r in rows if "loss" in r]
    knn = [(r["epoch"], r["knn_top1"]) for r in rows if "knn_top1" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if loss:
        ax.plot(*zip(*loss), color="tab:blue", lw=1.2, label="BYOL loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (2-2cos, both directions)", color="tab:blue")
    if knn:
        ax2 = ax.twinx()
        ax2.plot(*zip(*knn), "o-", color="tab:red", label="online kNN top-1")
        ax2.set_ylabel("online kNN top-1 (%)", color="tab:red")
    ax.set_title(title or Path(metrics_path).parent.name)
    return save_figure(fig, out_png)

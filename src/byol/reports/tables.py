"""Evaluation results cards of run directories -> one Markdown table and one PNG bar chart (and, when the
runs' logs have it, their online kNN against training time: :mod:`byol.reports.curves`).

Cards are found and read by :func:`byol.eval.cards.collect_cards`, the module that writes them.
Each card becomes one row, and a fine-tune card's supervised-from-scratch baseline a second row
("<protocol> (scratch)"); a kNN card gives one row per ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from byol.atomic import atomic_write
from byol.errors import ByolError
from byol.eval.cards import collect_cards
from byol.reports.curves import curves_table, knn_curve, plot_knn_curves

__all__ = ["Row", "collect_cards", "card_rows", "markdown_table", "plot_rows", "build_report"]

Row = dict[str, Any]


def _labels(card: dict[str, Any]) -> str:
    return str((card.get("hyperparameters") or {}).get("labels") or "")


def card_rows(run: str, card: dict[str, Any]) -> list[Row]:
    proto = card.get("protocol", "?")
    ds = Path(str(card.get("dataset", "?")).rstrip("/")).name
    m = card.get("metrics") or {}
    base = {"run": run, "dataset": ds, "labels": _labels(card)}
    if proto == "knn":
        return [{**base, "eval": f"knn k={k[1:]}", "top1": v, "top5": None} for k, v in m.items() if k.startswith("k")]
    rows = [{**base, "eval": proto, "top1": m.get("top1"), "top5": m.get("top5")}]
    bl = card.get("baseline")
    if bl and bl.get("metrics"):
        rows.append({**base, "eval": f"{proto} ({bl.get('name', 'baseline')})", "top1": bl["metrics"].get("top1"),
                     "top5": bl["metrics"].get("top5")})
    return rows


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}"


def markdown_table(rows: Sequence[Row]) -> str:
    head = ["run", "eval", "dataset", "labels", "top-1 %", "top-5 %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 2) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([r["run"], r["eval"], r["dataset"], r["labels"] or "-", _fmt(r["top1"]),
                                          _fmt(r["top5"])]) + " |")
    return "\n".join(lines)


def plot_rows(rows: Sequence[Row], out_png: str | Path, title: str = "BYOL evaluations") -> Path:
    """Grouped bar chart of top-1: one group per (eval, dataset, labels), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["eval"], r["dataset"], r["labels"]) for r in rows))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    val = {(r["run"], (r["eval"], r["dataset"], r["labels"])): r["top1"] for r in rows}
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.2), dpi=110)
    for i, run in enumerate(runs):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(groups))]
        ys = [val.get((run, g)) for g in groups]
        ax.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], width, label=run)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{e}\n{d}" + (f" {lab}" if lab and (lab != "100%" or "finetune" in e) else "") for e, d, lab in groups],
                       fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1.0), loc="upper left")
    from byol.reports.plots import save_figure

    return save_figure(fig, out_png)


def build_report(run_dirs: Sequence[str | Path], out_md: str | Path, *, png: bool = True) -> tuple[str, Path, Path | None]:
    """Collect cards, write the Markdown table to ``out_md`` and the chart next to it (``.png``).

    Returns ``(table, markdown path, png path or None)``; no card at all is a :class:`ByolError`.
    """
    cards = collect_cards(run_dirs)
    if not cards:
        raise ByolError("no evaluation results found in " + ", ".join(str(d) for d in run_dirs)
                        + " (run `byol eval ...` first; cards are JSON files under RUN_DIR/eval/)")
    rows = [r for run, card in cards for r in card_rows(run, card)]
    table = markdown_table(rows)
    out_md = Path(out_md)
    curves = {Path(d).name: c for d in run_dirs if (c := knn_curve(d))}
    if curves:  # the runs' online kNN against training time, when their logs have it
        table += ("\n\nOnline kNN (held-out train images) after each minute of training, from metrics.jsonl:\n\n"
                  + curves_table(curves))
        if png:
            plot_knn_curves(curves, out_md.with_name(out_md.stem + "-curves.png"))
    atomic_write(out_md, table + "\n")
    out_png = plot_rows(rows, out_md.with_suffix(".png")) if png else None
    return table, out_md, out_png

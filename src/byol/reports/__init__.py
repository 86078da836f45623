"""Run directories -> tables and plots."""

from byol.reports.tables import build_report, card_rows, collect_cards, markdown_table, plot_rows
from byol.reports.plots import plot_training_curves, read_metrics

__all__ = [
    "build_report",
    "card_rows",
    "collect_cards",
    "markdown_table",
    "plot_rows",
    "plot_training_curves",
    "read_metrics",
]

"""Run directories -> tables and plots."""

from byol.reports.plots import plot_training_curves, read_metrics

__all__ = ["plot_training_curves", "read_metrics"]

"""The protocol every self-supervised method implements, so the engine never imports a concrete one."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn


class Method(Protocol):
    """A method is an ``nn.Module`` over an injected backbone.

    - ``forward(view1, view2)`` returns a dict with a scalar ``loss`` and detached diagnostics
      (``proj``: the online projections of view 1, used by the collapse monitor; optionally a per-sample
      ``code_entropy`` in [0, 1], which the monitor also reads: SwAV's codes).
    - ``trainable_modules()`` names the modules the optimizer trains (never a target network).
    - ``after_step(step, total_steps)`` runs once per *optimizer* step, after ``optimizer.step()``
      (BYOL's EMA update goes here) and returns scalars to log, which the progress bar shows too (e.g.
      ``tau``; the loop names none itself). ``step`` is the schedule position,
      a float when a time budget re-mapped the run's remaining steps (engine.TrainState.sched_total).
    - ``encoder`` is the backbone to evaluate and export.
    - optional class attribute ``cross_replica_bn`` (default True): whether its BN layers normalize over all
      processes when ``train.sync_bn`` is left to the method (:class:`byol.train.replicas.Replicas`).
    - optional ``fixed_lr_modules()``: trained modules whose lr is held at the peak lr instead of following the
      schedule (:func:`byol.optim.optimizers.param_groups`; SimSiam's predictor).
    """

    encoder: nn.Module

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]: ...

    def trainable_modules(self) -> list[nn.Module]: ...

    def after_step(self, step: float, total_steps: int) -> dict[str, float]: ...

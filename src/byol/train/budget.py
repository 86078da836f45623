"""How many optimizer steps a run takes: from epochs, or from a wall-clock budget and measured speed.

Pure Python (no torch): :class:`BudgetPlanner` decides, the engine measures. The engine reports each
step's compute seconds, the wall clock after each step and around each periodic evaluation; the
planner answers with a :class:`Plan` (K = ``total_steps``, the warmup, and the anchors that re-map the
lr and tau schedules when K changes mid-run). Without a budget the plan is the epochs' and never moves.

With a budget:

1. *Calibration*: after the first ``CALIBRATION_STEPS`` steps, K is set from the median compute time
   of the last ones (the first steps pay one-off warm-up costs).
2. *Re-estimates* at every periodic evaluation (epoch end) until ``reestimate_until`` of the run is
   done, from the wall-clock pace since the previous one (logging, checkpoints and slow steps included).
3. *Pace check* after every step once re-estimates have stopped (the last ``1 - reestimate_until`` of the
   run): when the mean wall time of the last ``pace_window`` steps says the plan no longer fits the budget,
   the run is shortened at once, so the schedules still end at the last step instead of a hard stop.
4. *Periodic re-estimates* after warmup, every ``REESTIMATE_EVERY`` of the planned steps (at least a pace
   window) until ``reestimate_until`` of the run, from the wall-clock pace since the previous (re-)estimate:
   these may also lengthen the run. Without them a slow moment early in a run (another process busy for
   half a minute) shortened the plan for good when the run had no evaluation before its (shortened) end:
   measured on the demo preset under a concurrent test run, 450 of ~5,000 steps, the run ending after 4 of
   its 9 minutes.

A change of K after warmup does not restart the schedules: the remaining steps are mapped linearly
onto the remaining schedule (:func:`byol.optim.schedules.warped_step`), so lr and tau are continuous and
still reach their final values exactly at the new last step. The final evaluation's measured time is
reserved in every budgeted plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from byol.optim.schedules import warped_step

#: steps timed before the first budgeted plan; the first ``CALIBRATION_SKIP`` of them are not used
CALIBRATION_STEPS = 8
CALIBRATION_SKIP = 3
#: re-estimate the plan at epoch ends until this fraction of the run is done; later ones only let the
#: pace check shorten it (a re-estimate near the end would re-map the schedules over very few steps)
REESTIMATE_UNTIL = 0.9
#: share of the remaining time planned for (the rest absorbs speed noise)
BUDGET_MARGIN = 0.97
#: periodic re-estimates after warmup, every this share of the planned steps
REESTIMATE_EVERY = 0.05
#: image pairs a budgeted run should see to beat random init by 5 points kNN. Measured with the folder
#: preset (small CNN at 32 px, batch 64; docs/sweeps.md, 2026-12-07) against the fair floor (random init
#: with BN statistics recalibrated), kNN on a held-out 10% of train, 2 seeds: natural photos +7.8/+9.3 at
#: 84k pairs; CIFAR-10 +4.1/+6.0 at 150k, +7.7/+9.5 at 300k, +9.5 to +13.4 at 440k-500k. The smallest
#: length at which every set and seed gained 5 or more. A heuristic for the warning, not a guarantee.
MIN_PAIRS_TO_LEARN = 300_000


@dataclass(frozen=True)
class Plan:
    """The run's length and how its steps map onto the lr / tau schedules.

    ``sched_total`` is 0 until a re-plan after warmup changed ``total_steps``; from then on the steps
    ``anchor_step .. total_steps`` map linearly onto the schedule positions ``anchor_value .. sched_total``.
    """

    total_steps: int
    warmup_steps: int
    sched_total: int = 0
    anchor_step: int = 0
    anchor_value: float = 0.0

    def position(self, step: int) -> tuple[float, int]:
        """(position, K) at which the lr and tau schedules are read for optimizer step ``step``."""
        if not self.sched_total:
            return float(step), self.total_steps
        position = warped_step(step, self.total_steps, self.anchor_step, self.anchor_value, self.sched_total)
        return position, self.sched_total


def _median(xs: Sequence[float]) -> float:
    ys = sorted(xs)
    return ys[len(ys) // 2]


class BudgetPlanner:
    """Plans a run of ``epochs`` (``steps_per_epoch`` optimizer steps each) within ``budget_seconds``.

    ``eval_every_epochs``: the period of the evaluations whose time is spread over the steps (0: none).
    The decisions (:meth:`plan`, :meth:`seconds_per_step`) are pure functions of their arguments; the
    measurements of one ``fit`` (calibration samples, the pace window, the last evaluation's seconds)
    are kept between :meth:`start` and the end of that fit.
    """

    def __init__(
        self,
        *,
        epochs: float,
        warmup_epochs: float,
        steps_per_epoch: float,
        budget_seconds: float | None,
        eval_every_epochs: float,
        pace_window: int,
        margin: float = BUDGET_MARGIN,
        reestimate_until: float = REESTIMATE_UNTIL,
    ) -> None:
        self.epochs, self.warmup_epochs, self.steps_per_epoch = epochs, warmup_epochs, steps_per_epoch
        self.budget_seconds, self.eval_every_epochs = budget_seconds, eval_every_epochs
        self.margin, self.reestimate_until = margin, reestimate_until
        self.pace_window = max(1, pace_window)
        self.calibrating = False
        self.eval_seconds = 0.0  #: the last periodic evaluation's seconds (0 until one ran)
        self._samples: list[float] = []  # compute seconds of the calibration steps
        self._recent: deque[float] = deque(maxlen=self.pace_window)  # wall seconds of the last steps
        self._last_end = 0.0
        self._pace_start, self._pace_step = 0.0, 0
        self._next_reestimate = 0

    # -- decisions ----------------------------------------------------------------------------
    def seconds_per_step(self, step_seconds: float, eval_seconds: float) -> float:
        """A step's wall time plus its share of the periodic evaluations (spread over the steps between two)."""
        if self.eval_every_epochs:
            return step_seconds + eval_seconds / (self.eval_every_epochs * self.steps_per_epoch)
        return step_seconds

    def plan(
        self,
        current: Plan,
        *,
        step: int,
        elapsed: float,
        step_seconds: float | None = None,
        eval_seconds: float = 0.0,
        remap: bool = False,
        shrink_only: bool = False,
    ) -> Plan:
        """K and warmup from the epochs, capped by what the remaining budget allows at ``step_seconds``.

        ``remap``: a re-estimate during training; after warmup it changes the run's length without
        moving the schedules (see :class:`Plan`). The first plans (from epochs, then from the calibration
        steps) set K directly. ``shrink_only``: keep ``current`` unless it is now too long.
        """
        by_epochs = max(1, math.ceil(self.epochs * self.steps_per_epoch))
        total = by_epochs
        if self.budget_seconds is not None and step_seconds:
            remaining = (self.budget_seconds - elapsed) * self.margin
            per_step = self.seconds_per_step(step_seconds, eval_seconds)
            # the final evaluation also has to fit in the budget
            budget_steps = step + max(1, int((remaining - eval_seconds) / per_step))
            total = min(by_epochs, budget_steps)
        total = max(total, step + 1)
        if shrink_only and total >= current.total_steps:
            return current
        if remap and step >= current.warmup_steps:
            if total == current.total_steps:
                return current
            position, sched_total = current.position(step)
            return dataclasses.replace(current, total_steps=total, sched_total=sched_total, anchor_step=step,
                                       anchor_value=position)
        # Warmup never takes more than a fifth of a (short, budgeted) run.
        warmup = min(int(round(self.warmup_epochs * self.steps_per_epoch)), total // 5)
        return dataclasses.replace(current, total_steps=total, warmup_steps=warmup)

    def exhausted(self, elapsed: float) -> bool:
        """The budget is used up: the loop stops at this step boundary, even mid-schedule."""
        return self.budget_seconds is not None and elapsed >= self.budget_seconds

    # -- one fit's measurements ---------------------------------------------------------------
    def start(self, current: Plan, *, step: int, now: float) -> Plan:
        """Begin a fit at ``step`` (wall clock ``now``); a fresh run gets its plan from the epochs.

        Only a fresh run calibrates: a resumed one keeps its plan until the next re-estimate.
        """
        self.calibrating = self.budget_seconds is not None and step == 0
        self.eval_seconds = 0.0
        self._samples.clear()
        self._recent.clear()
        self._last_end = self._pace_start = now
        self._pace_step = step
        plan = self.plan(current, step=step, elapsed=0.0) if current.total_steps == 0 else current
        self._next_reestimate = step + self._period(plan)
        return plan

    def _period(self, plan: Plan) -> int:
        return max(self.pace_window, math.ceil(REESTIMATE_EVERY * plan.total_steps))

    def after_step(self, current: Plan, *, step: int, elapsed: float, step_seconds: float, now: float) -> Plan:
        """After optimizer step ``step`` (its compute took ``step_seconds``; ``now``: the wall clock)."""
        plan = current
        if self.calibrating:
            self._samples.append(step_seconds)
            if len(self._samples) == CALIBRATION_STEPS:
                measured = _median(self._samples[CALIBRATION_SKIP:])
                plan = self.plan(plan, step=step, elapsed=elapsed, step_seconds=measured, eval_seconds=self.eval_seconds)
                self.calibrating = False
                self._recent.clear()  # the first steps pay warm-up costs
        self._recent.append(now - self._last_end)  # the whole step: logging and checkpoints included
        self._last_end = now
        if self.budget_seconds is None or self.calibrating:
            return plan
        if len(self._recent) == self.pace_window and step > self.reestimate_until * plan.total_steps:
            # after the last re-estimate the host slowed down: shorten the run before the hard stop cuts it.
            # Earlier, the periodic re-estimates (a longer window) follow the pace both ways: a pace check
            # there shrank the plan on a passing slow moment and ran the schedules ahead for good.
            pace = sum(self._recent) / len(self._recent)
            left = (plan.total_steps - step) * self.seconds_per_step(pace, self.eval_seconds)
            if elapsed + left + self.eval_seconds > self.budget_seconds:
                plan = self.plan(plan, step=step, elapsed=elapsed, step_seconds=pace, eval_seconds=self.eval_seconds,
                                 remap=True, shrink_only=True)
        if step >= self._next_reestimate and plan.warmup_steps <= step <= self.reestimate_until * plan.total_steps:
            pace = (now - self._pace_start) / max(1, step - self._pace_step)
            plan = self.plan(plan, step=step, elapsed=elapsed, step_seconds=pace, eval_seconds=self.eval_seconds,
                             remap=True)
            self._pace_start, self._pace_step = now, step
            self._next_reestimate = step + self._period(plan)
        return plan

    def after_eval(
        self, current: Plan, *, step: int, elapsed: float, eval_started: float, eval_seconds: float, now: float
    ) -> Plan:
        """After a periodic evaluation at ``step`` that began at ``eval_started`` and took ``eval_seconds``.

        The re-estimate uses the wall-clock pace since the previous evaluation: every per-step cost
        (logging, progress bar, checkpoints, a slow step now and then) included, unlike the steps' own
        times. The evaluation's own time is not part of the steps' pace.
        """
        pace = (eval_started - self._pace_start) / max(1, step - self._pace_step)
        self.eval_seconds = eval_seconds
        plan = current
        epoch = step / self.steps_per_epoch
        until = self.reestimate_until * current.total_steps / self.steps_per_epoch
        if self.budget_seconds is not None and epoch <= until:
            plan = self.plan(current, step=step, elapsed=elapsed, step_seconds=pace, eval_seconds=eval_seconds,
                             remap=True)
        self._pace_start, self._pace_step = now, step
        self._last_end = now
        return plan


def short_plan_warning(*, total_steps: int, batch_size: int, steps_per_epoch: float,
                       budget_seconds: float | None) -> str | None:
    """The one-line warning for a budgeted plan too short to beat random init (None: long enough).

    Called once the pace is measured (after calibration), so ``total_steps`` is what the budget buys."""
    pairs = total_steps * batch_size
    if budget_seconds is None or pairs >= MIN_PAIRS_TO_LEARN:
        return None
    need = budget_seconds * MIN_PAIRS_TO_LEARN / max(pairs, 1)
    return (f"this budget buys {total_steps} steps ({pairs:,} image pairs, {total_steps / steps_per_epoch:.1f} epochs) "
            f"at the measured pace: runs under about {MIN_PAIRS_TO_LEARN:,} pairs gained less than 5 points kNN "
            f"over random init in our measurements; raise the budget to about {_minutes(need)}, lower --image-size "
            f"(the cost grows with its square) or use a smaller model (model.options.widths)")


def _minutes(seconds: float) -> str:
    return f"{math.ceil(seconds / 60)}m" if seconds >= 60 else f"{math.ceil(seconds)}s"

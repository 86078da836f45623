"""The budget planner alone (no training, no torch): plans, calibration, re-plans, pace check."""

import pytest

from byol.train.budget import CALIBRATION_STEPS, BudgetPlanner, Plan
from byol.optim.schedules import target_tau, warmup_cosine


def _planner(**kw) -> BudgetPlanner:
    args = dict(epochs=10_000, warmup_epochs=1.0, steps_per_epoch=10.0, budget_seconds=100.0, eval_every_epochs=0.0,
                pace_window=4)
    return BudgetPlanner(**{**args, **kw})


def _fresh(planner: BudgetPlanner) -> Plan:
    return planner.start(Plan(0, 0), step=0, now=0.0)


def test_plan_from_epochs_without_a_budget():
    p = _planner(epochs=2.5, warmup_epochs=0.4, steps_per_epoch=7.5, budget_seconds=None)
    plan = _fresh(p)
    assert plan == Plan(total_steps=19, warmup_steps=3)  # ceil(2.5 * 7.5): a started step counts
    assert not p.calibrating
    # without a budget, neither measurements nor evaluations move the plan
    now = 0.0
    for step in range(1, 15):
        now += 5.0
        assert p.after_step(plan, step=step, elapsed=now, step_seconds=5.0, now=now) is plan
    assert p.after_eval(plan, step=15, elapsed=now, eval_started=now, eval_seconds=50.0, now=now + 50) is plan
    assert not p.exhausted(1e9)


def test_calibration_uses_the_median_of_the_last_calibration_steps():
    p = _planner()
    plan = _fresh(p)
    assert p.calibrating and plan.total_steps == 100_000  # from the epochs until measured
    times = [5.0, 5.0, 5.0, 1.0, 1.0, 2.0, 1.0, 1.0]  # the first steps pay warm-up costs
    assert len(times) == CALIBRATION_STEPS
    now = 0.0
    for step, dt in enumerate(times, 1):
        now += dt
        plan = p.after_step(plan, step=step, elapsed=now, step_seconds=dt, now=now)
        assert p.calibrating == (step < CALIBRATION_STEPS)
    # the median of the last five is 1 s: 8 steps done in 21 s, then 1 s per step in 97% of the 79 s left
    assert plan.total_steps == 8 + int((100 - 21) * 0.97 / 1.0)
    assert plan.warmup_steps == 10 and plan.sched_total == 0  # set directly: nothing to re-map yet


def test_replan_after_warmup_keeps_lr_and_tau_continuous_and_ends_at_the_new_last_step():
    p = _planner(budget_seconds=100.0, margin=1.0)
    plan = Plan(total_steps=100, warmup_steps=10)
    # slower (2 s/step: 50 s left = 25 steps), then faster again (0.5 s/step: 30 s left = 60 steps)
    for step, elapsed, pace, total in ((50, 50.0, 2.0, 75), (60, 70.0, 0.5, 120)):
        before = plan.position(step)
        plan = p.plan(plan, step=step, elapsed=elapsed, step_seconds=pace, remap=True)
        assert plan.total_steps == total
        assert plan.position(step) == pytest.approx(before)  # no jump at the re-plan
        assert plan.warmup_steps == 10 and plan.sched_total == 100  # the schedules keep their K
        assert warmup_cosine(*plan.position(step), 1.0, 10) == pytest.approx(warmup_cosine(*before, 1.0, 10))
        assert target_tau(*plan.position(step), 0.9) == pytest.approx(target_tau(*before, 0.9))
        end = plan.position(plan.total_steps)
        assert end == (100.0, 100)  # the schedules end exactly at the new last step...
        assert plan.position(plan.total_steps - 1)[0] < 100.0  # ...not before
        assert target_tau(*end, 0.9) == 1.0 and warmup_cosine(*end, 1.0, 10) == 0.0


def test_replan_during_warmup_sets_the_plan_directly():
    p = _planner(budget_seconds=100.0, margin=1.0)
    plan = p.plan(Plan(total_steps=100, warmup_steps=10), step=5, elapsed=5.0, step_seconds=1.0, remap=True)
    assert plan == Plan(total_steps=100, warmup_steps=10)  # 5 + 95 fits: unchanged
    plan = p.plan(plan, step=5, elapsed=5.0, step_seconds=2.0, remap=True)
    assert plan == Plan(total_steps=5 + 47, warmup_steps=10)  # nothing re-mapped: warmup is still running


def test_pace_check_only_shortens():
    p = _planner(budget_seconds=100.0, pace_window=4, reestimate_until=0.0)  # no periodic re-estimates here
    plan = Plan(total_steps=60, warmup_steps=10)
    p.start(plan, step=20, now=20.0)
    now = 20.0
    for step in range(21, 25):  # fast steps: 60 steps would fit twice; the plan must stay
        now += 0.5
        assert p.after_step(plan, step=step, elapsed=now, step_seconds=0.5, now=now) == plan
    for step in range(25, 29):  # slow steps (3 s): from step 27 on the mean of the last 4 says 60 no longer fits
        now += 3.0
        plan = p.after_step(plan, step=step, elapsed=now, step_seconds=3.0, now=now)
    assert plan.total_steps == 28 + int((100 - now) * 0.97 / 3.0) < 60
    assert plan.sched_total == 60  # shortened by re-mapping: the schedules still end at the last step
    # the decision itself: a shrink-only re-plan keeps a plan that is too short for the new pace
    short = Plan(total_steps=30, warmup_steps=5)
    assert p.plan(short, step=20, elapsed=20.0, step_seconds=0.1, remap=True, shrink_only=True) is short
    assert p.plan(short, step=20, elapsed=20.0, step_seconds=0.1, remap=True).total_steps > 30  # (control)


def test_warmup_never_exceeds_a_fifth_of_the_run():
    p = _planner(epochs=1.0, warmup_epochs=10.0, steps_per_epoch=50.0, budget_seconds=None)
    assert _fresh(p) == Plan(total_steps=50, warmup_steps=10)
    # a short budget: calibration plans 8 + 23 steps; warmup (10 epochs = 500 steps) is capped at 31 // 5
    p = _planner(warmup_epochs=10.0, steps_per_epoch=50.0, budget_seconds=16.0)
    plan, now = _fresh(p), 0.0
    for step in range(1, CALIBRATION_STEPS + 1):
        now += 0.5
        plan = p.after_step(plan, step=step, elapsed=now, step_seconds=0.5, now=now)
    assert plan == Plan(total_steps=8 + 23, warmup_steps=31 // 5)


def test_the_final_evaluation_time_is_reserved():
    p = _planner(budget_seconds=100.0, margin=1.0)
    plan = p.plan(Plan(0, 0), step=0, elapsed=0.0, step_seconds=1.0, eval_seconds=10.0)
    assert plan.total_steps == 90  # 100 s - 10 s for the evaluation at the end, at 1 s/step
    # periodic evaluations (every 2 epochs = 20 steps here) are spread over the steps on top of it
    p = _planner(budget_seconds=100.0, margin=1.0, eval_every_epochs=2.0)
    assert p.seconds_per_step(1.0, 10.0) == 1.5
    assert p.plan(Plan(0, 0), step=0, elapsed=0.0, step_seconds=1.0, eval_seconds=10.0).total_steps == 60


def test_reestimates_stop_late_in_the_run():
    p = _planner(budget_seconds=1000.0, margin=1.0, reestimate_until=0.9)
    plan = Plan(total_steps=100, warmup_steps=10)
    p.start(plan, step=0, now=0.0)
    # at 95% of the run a much faster pace would lengthen it, but only the pace check acts this late
    assert p.after_eval(plan, step=95, elapsed=95.0, eval_started=9.5, eval_seconds=0.0, now=9.5) is plan
    p.start(plan, step=0, now=0.0)
    assert p.after_eval(plan, step=85, elapsed=85.0, eval_started=8.5, eval_seconds=0.0, now=8.5) != plan


def test_periodic_reestimates_lengthen_a_plan_a_slow_start_shortened():
    """A slow moment early in a run (another process busy) shrinks the plan through the pace check; once
    the host is fast again the periodic re-estimates after warmup give the steps back, continuously."""
    p = _planner(budget_seconds=100.0, pace_window=4, margin=1.0)
    plan = p.start(Plan(total_steps=1000, warmup_steps=10), step=0, now=0.0)
    p.calibrating = False  # calibrated at 0.1 s per step: 1000 steps fit
    now, step = 0.0, 0
    for dt in [1.0] * 12 + [0.1] * 200:  # 12 slow steps, then the machine is quiet again
        step, now = step + 1, now + dt
        before = plan.position(step)
        new = p.after_step(plan, step=step, elapsed=now, step_seconds=dt, now=now)
        if new.total_steps != plan.total_steps and step >= plan.warmup_steps:
            assert new.position(step)[0] == pytest.approx(before[0])  # lr and tau do not jump
        plan = new
    shortest = 12 + int((100 - 12) / 1.0)
    assert plan.total_steps > 2 * shortest  # grown back towards what the quiet pace allows
    assert plan.total_steps == pytest.approx(step + (100 - now) / 0.1, rel=0.05)


def test_the_short_plan_warning_names_the_budget_that_would_be_enough():
    from byol.train.budget import MIN_PAIRS_TO_LEARN, short_plan_warning

    enough = MIN_PAIRS_TO_LEARN // 128 + 1
    assert short_plan_warning(total_steps=enough, batch_size=128, steps_per_epoch=100, budget_seconds=600) is None
    assert short_plan_warning(total_steps=10, batch_size=128, steps_per_epoch=100, budget_seconds=None) is None
    text = short_plan_warning(total_steps=enough // 4, batch_size=128, steps_per_epoch=100, budget_seconds=600)
    assert text is not None and "about 40m" in text and "\n" not in text  # 600 s x 300k / (586 x 128) = 40.0 min

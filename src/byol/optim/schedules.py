"""Schedules as pure functions of the (0-based) optimizer step.

``k`` counts optimizer steps (not micro-batches), ``total`` is K, the total number of optimizer
steps of the run (counting micro-batches instead sends tau to 1 early: solo-learn issues 248 and 286).
"""

from __future__ import annotations

import math


def warmup_cosine(step: float, total: int, peak: float, warmup: int, final: float = 0.0) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine decay to ``final`` at ``total``.

    As in the reference code, step 0 has lr 0 (``peak * k / warmup``).
    """
    if total <= 0:
        raise ValueError("total steps must be positive")
    if warmup > 0 and step < warmup:
        return peak * step / warmup
    decay_steps = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / decay_steps))
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


#: ``target_tau``'s schedules: the paper's cosine ramp to 1, or ``tau_base`` throughout.
TAU_SCHEDULES = ("cosine", "constant")


def target_tau(step: float, total: int, tau_base: float, schedule: str = "cosine") -> float:
    """The paper's EMA decay: ``tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2``.

    ``schedule="constant"`` keeps ``tau_k = tau_base`` for the whole run: the rows of the paper's target
    ablation (Grill et al. 2020, Table 5a) use a fixed tau (1 = a never-updated target, 0 = the online
    weights of the previous step), which the cosine cannot express since it always ends at 1.
    """
    if total <= 0:
        raise ValueError("total steps must be positive")
    if schedule == "constant":
        return float(tau_base)
    if schedule != "cosine":
        raise ValueError(f"unknown tau schedule {schedule!r} (one of {', '.join(TAU_SCHEDULES)})")
    k = min(step, total)
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * k / total) + 1.0) / 2.0


def warped_step(step: int, end: int, anchor_step: int, anchor_value: float, total: int) -> float:
    """The schedule position of ``step`` after the run's length changed mid-run.

    A time budget re-estimates the run's length (``end`` real steps) while it trains. Re-reading the
    schedules with a new K would make lr and tau jump; instead the remaining real steps
    ``[anchor_step, end]`` are mapped linearly onto the remaining schedule ``[anchor_value, total]``,
    so both stay continuous and still reach their final values exactly at ``end``. Without a change
    (``anchor_step = anchor_value = 0``, ``end = total``) this is the identity.
    """
    if end <= anchor_step:
        return float(total)
    frac = min(1.0, max(0.0, (step - anchor_step) / (end - anchor_step)))
    return anchor_value + (total - anchor_value) * frac


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The paper's linear scaling rule: ``lr = base * B / 256`` with B the global (effective) batch."""
    return base_lr * batch_size / 256.0

"""What the training loop is told (:class:`LoopOptions`) and what it remembers (:class:`TrainState`,
the loop's part of a checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from byol.train.budget import BUDGET_MARGIN, REESTIMATE_UNTIL, Plan
from byol.config import OptimConfig, TrainConfig
from byol.optim.schedules import scaled_lr


@dataclass
class LoopOptions:
    """Everything about *how* to train (not what): explicit values, no config object.

    The fields without a default come from the config (:meth:`from_config`), whose defaults are the
    only ones; the engine's own knobs (not in the config) keep theirs here.
    """

    epochs: float
    peak_lr: float
    warmup_epochs: float
    accum_steps: int
    budget_seconds: float | None
    amp: str  # auto (see resolve_amp) | off | fp16 | bf16
    channels_last: bool
    log_every: int
    ckpt_every: int
    ckpt_seconds: float
    keep_checkpoints: int  #: numbered checkpoints kept (the newest; 0 = all)
    stop_on_collapse: bool  #: a collapse stops the run (else one warning)
    eval_every_epochs: float  #: period of ``evaluate`` (0: only at the end)
    seed: int
    progress: bool
    budget_pace_window: int  #: with a budget: steps whose mean wall time the pace check uses (byol.train.budget)
    sync_bn: bool | None  #: cross-replica BN with several processes (None: the method's choice, byol.train.replicas)
    update_stats: bool  #: log each layer's relative update size at log steps (byol.train.monitor.update_ratios)
    #: re-estimate the step budget at epoch ends until this fraction of the run is done
    budget_reestimate_until: float = REESTIMATE_UNTIL
    #: share of the remaining time planned for (the rest absorbs speed noise)
    budget_margin: float = BUDGET_MARGIN

    @classmethod
    def from_config(cls, train: TrainConfig, optim: OptimConfig, *, evaluate_every: float) -> LoopOptions:
        """The options of a run configured by ``train`` and ``optim``; ``evaluate_every``: epochs between
        two periodic evaluations (0 when the run has none, e.g. no online kNN monitor)."""
        return cls(
            epochs=train.epochs, peak_lr=scaled_lr(optim.base_lr, optim.batch_size), warmup_epochs=optim.warmup_epochs,
            accum_steps=optim.accum_steps, budget_seconds=train.budget_seconds, amp=train.amp,
            channels_last=train.channels_last, log_every=train.log_every, ckpt_every=train.ckpt_every,
            ckpt_seconds=train.ckpt_minutes * 60, keep_checkpoints=train.keep_checkpoints,
            stop_on_collapse=train.stop_on_collapse, eval_every_epochs=evaluate_every, seed=train.seed,
            progress=train.progress, budget_pace_window=train.budget_pace_window, sync_bn=train.sync_bn,
            update_stats=train.update_stats,
        )


@dataclass
class TrainState:
    """What a checkpoint stores about the loop (``checkpoint()["state"]`` is this object's ``__dict__``)."""

    step: int = 0  #: optimizer steps done
    micro: int = 0  #: micro-batches consumed in the current epoch
    epoch: int = 0
    #: the budget.Plan fields (see there): the run's length K, warmup, and the schedules' re-mapping
    total_steps: int = 0
    warmup_steps: int = 0
    sched_total: int = 0
    anchor_step: int = 0
    anchor_value: float = 0.0
    elapsed: float = 0.0  #: training seconds used so far (across resumes)
    history: list[dict[str, Any]] = field(default_factory=list)  #: eval results per epoch
    finished: bool = False  #: the run ended (completed or budget reached): a resume has nothing to train

    @property
    def plan(self) -> Plan:
        return Plan(**{f.name: getattr(self, f.name) for f in fields(Plan)})

    @plan.setter
    def plan(self, plan: Plan) -> None:
        for f in fields(Plan):
            setattr(self, f.name, getattr(plan, f.name))

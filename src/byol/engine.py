"""The one training loop every method uses.

The engine knows the :class:`~byol.methods.base.Method` protocol, an optimizer, a view function and
a source of uint8 batches; it never imports a concrete method. It owns: lr and EMA schedules over
*optimizer* steps, gradient accumulation, AMP, channels_last, checkpoints (atomic) and exact resume,
measuring the wall-clock budget (:mod:`byol.budget` decides the plan), progress bar, ``metrics.jsonl`` /
TensorBoard, and the collapse monitor.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from byol import dist
from byol.budget import BUDGET_MARGIN, CALIBRATION_STEPS, REESTIMATE_UNTIL, BudgetPlanner, Plan
from byol.config import OptimConfig, TrainConfig, check_batch
from byol.data.loader import BatchIterator, gather_batch
from byol.data.streamloader import StreamLoader
from byol.errors import ConfigError, TrainingError
from byol.monitor import COLLAPSE_ADVICE, collapse_stats, is_collapsed
from byol.optim import set_lr
from byol.checkpoints import numbered_name, restore_rng, rng_state, rotate, save_checkpoint
from byol.rundir import JsonlLogger
from byol.runtime.device import PRECISION_NAMES, autocast_for, resolve_amp
from byol.runtime.signals import stop_on_signals
from byol.schedules import scaled_lr, warmup_cosine

CHECKPOINT_VERSION = 1


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
    budget_pace_window: int  #: with a budget: steps whose mean wall time the pace check uses (byol.budget)
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
            progress=train.progress, budget_pace_window=train.budget_pace_window,
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


class Trainer:
    """Train ``method`` on uint8 ``images`` with views from ``augment``.

    ``evaluate`` (optional) is called with the method's encoder every ``eval_every_epochs`` and at
    the end; it returns scalars (e.g. online kNN accuracy) to log.
    """

    def __init__(
        self, method: nn.Module, optimizer: torch.optim.Optimizer,
        augment: Callable[[Tensor, torch.Generator | None], tuple[Tensor, Tensor]], images: Tensor | StreamLoader, *,
        batch_size: int, device: torch.device, options: LoopOptions, run_dir: Path | None = None,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        checkpoint_extra: dict[str, Any] | None = None, clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.clock = clock  # injectable for tests of the budget logic
        self.method = method
        self.opt = optimizer
        self.augment = augment
        self.images = images
        self.stream = images if isinstance(images, StreamLoader) else None  # crops decoded in DataLoader workers
        self.device = device
        self.o = options
        self.run_dir = Path(run_dir) if run_dir else None
        self.evaluate = evaluate
        self.extra = checkpoint_extra or {}
        self.rank, self.world = dist.rank(), dist.world_size()
        if self.world > 1:
            # Batches are sharded by rank, but nothing averages gradients or syncs the EMA targets yet.
            raise ConfigError(f"multi-process training is not supported yet (world size {self.world}): each process "
                              "would silently train its own model; run one process (without torchrun)")
        check_batch(batch_size, options.accum_steps, self.world)
        self.micro_batch = batch_size // options.accum_steps  # global micro-batch
        self.batch_size = batch_size
        self.batches = BatchIterator(len(images), self.micro_batch, seed=options.seed, rank=self.rank, world_size=self.world)
        self.micro_per_epoch = self.batches.steps_per_epoch
        self.steps_per_epoch = self.micro_per_epoch / options.accum_steps
        self.budget = BudgetPlanner(
            epochs=options.epochs, warmup_epochs=options.warmup_epochs, steps_per_epoch=self.steps_per_epoch,
            budget_seconds=options.budget_seconds, pace_window=options.budget_pace_window,
            eval_every_epochs=options.eval_every_epochs if evaluate is not None else 0.0,
            margin=options.budget_margin, reestimate_until=options.budget_reestimate_until,
        )
        amp = resolve_amp(device, options.amp)
        self.precision = PRECISION_NAMES[amp]
        self.autocast, self.scaler = autocast_for(device, amp)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(options.seed * 1000 + self.rank)
        self.state = TrainState()
        self._collapse_warned = False
        self._saved_step: int | None = None  #: the step of the last checkpoint written or loaded
        self._stop_requested = False
        self.stop_reason = ""
        self._bar: Any = None  # the progress bar of the running fit (tqdm), if any

    def request_stop(self) -> None:
        """Ask the loop to save and stop at the next step boundary (what SIGINT/SIGTERM do)."""
        self._stop_requested = True

    def _stop_on_signals(self) -> Any:
        """First Ctrl-C / SIGTERM / SIGUSR1: stop cleanly at the step boundary; a second one: stop at once."""
        return stop_on_signals(lambda: self._stop_requested, self.request_stop)

    def schedule_position(self) -> tuple[float, int]:
        """(position, K) at which the lr and tau schedules are read for the current step."""
        return self.state.plan.position(self.state.step)

    def _set_plan(self, plan: Plan) -> None:
        if plan != self.state.plan:
            self.state.plan = plan
            if self._bar is not None:
                self._bar.total = plan.total_steps

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, "method": self.method.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "state": self.state.__dict__.copy(),
                "rng": rng_state(self.gen), **self.extra}

    def save(self, numbered: bool = False) -> None:
        """``last.pt`` (+ a numbered checkpoint, keeping the newest ``keep_checkpoints``), verified on load."""
        if not self.run_dir or not dist.is_main():
            return
        ckpt_dir = self.run_dir / "checkpoints"
        save_checkpoint(self.checkpoint(), ckpt_dir / "last.pt",
                        *([ckpt_dir / numbered_name(self.state.step)] if numbered else []))
        if numbered:
            rotate(ckpt_dir, self.o.keep_checkpoints)
        self._last_save, self._saved_step = self.clock(), self.state.step

    def load(self, ckpt: dict[str, Any]) -> None:
        self.method.load_state_dict(ckpt["method"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        restore_rng(ckpt["rng"], self.gen)
        self._saved_step = self.state.step

    def _halt(self, what: str) -> TrainingError:
        """The error that stops a run whose state must not be saved (it would overwrite a good checkpoint)."""
        if self.run_dir is None or self._saved_step is None:
            good = "no checkpoint was saved yet"
        else:
            good = f"the last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'} (step {self._saved_step})"
        return TrainingError(f"{what}; stopped without saving, {good}")

    def _maybe_checkpoint(self) -> None:
        """A numbered checkpoint every ``ckpt_every`` steps, else ``last.pt`` when it is ``ckpt_seconds`` old."""
        if not (dist.is_main() and self.run_dir):
            return
        if self.state.step % self.o.ckpt_every == 0:
            self.save(numbered=True)
        elif self.clock() - self._last_save > self.o.ckpt_seconds:
            self.save()

    # -- one step ----------------------------------------------------------------------------
    def _micro_batches(self) -> Iterator[Tensor]:
        st = self.state
        while True:
            batches = self.batches.indices(st.epoch, st.micro)
            for idx in batches if self.stream is None else self.stream.batches(batches, st.epoch):
                st.micro += 1
                yield idx
            st.epoch += 1
            st.micro = 0

    def _views(self, idx: Any) -> tuple[Tensor, Tensor]:
        if self.stream is None:
            v1, v2 = self.augment(gather_batch(self.images, idx, self.device), self.gen)
        else:  # each view's crop, decoded in DataLoader workers: the other view ops
            crops = (c.to(self.device, non_blocking=True) for c in idx[:2])
            v1, v2 = self.augment.from_crops(*crops, self.gen)  # type: ignore[attr-defined]
        if self.o.channels_last and v1.dim() == 4:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2

    def _optimizer_step(self, micro_batches: Iterator[Tensor]) -> tuple[dict[str, Tensor], dict[str, float]]:
        """One optimizer step over ``accum_steps`` micro-batches at the scheduled lr, then the method's
        ``after_step`` (BYOL's EMA update must see the online weights *after* the optimizer step).

        Returns the last micro-batch's outputs and the method's scalars (e.g. tau)."""
        position, sched_total = self.schedule_position()
        set_lr(self.opt, warmup_cosine(position, sched_total, self.o.peak_lr, self.state.warmup_steps))
        out: dict[str, Tensor] = {}
        for _ in range(self.o.accum_steps):
            v1, v2 = self._views(next(micro_batches))
            with self.autocast:
                out = self.method(v1, v2)
            if not bool(torch.isfinite(out["loss"].detach()).all()):
                raise self._halt(f"loss became {float(out['loss'].detach())} at step {self.state.step + 1} (lower "
                                 "optim.base_lr or use train.amp=off)")
            loss = out["loss"] / self.o.accum_steps
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        extra = self.method.after_step(position, sched_total)
        self.state.step += 1
        return out, extra

    def _log_step(self, out: dict[str, Tensor], extra: dict[str, float], logger: JsonlLogger) -> None:
        """The step's record (loss, lr, method scalars, throughput, collapse statistics) to the log and bar."""
        st, now = self.state, self.clock()
        rec = {"step": st.step, "epoch": st.step / self.steps_per_epoch, "loss": float(out["loss"].detach()),
               "lr": self.opt.param_groups[0]["lr"], **extra,
               "pairs_per_s": self._window_pairs / max(now - self._window_t, 1e-9)}
        if "proj" in out:
            rec.update(collapse_stats(out["proj"]))
            if st.step > st.warmup_steps and is_collapsed(rec) and self.o.stop_on_collapse:
                raise self._halt(f"collapse at step {st.step} (train.stop_on_collapse): "
                                 + COLLAPSE_ADVICE.format(**rec).split(". ")[0])
            if st.step > st.warmup_steps and is_collapsed(rec) and not self._collapse_warned:
                warnings.warn(COLLAPSE_ADVICE.format(**rec), stacklevel=3)
                self._collapse_warned = True
        if dist.is_main():
            logger.log(rec)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.3g}", tau=f"{extra.get('tau', 0):.4f}",
                                  pairs_s=f"{rec['pairs_per_s']:.0f}")
        self._window_t, self._window_pairs = now, 0

    # -- evaluation and the loop -------------------------------------------------------------
    def _run_eval(self, logger: JsonlLogger) -> float:
        if self.evaluate is None:
            return 0.0
        t0 = self.clock()
        result = self.evaluate(self.method.encoder)
        dt = self.clock() - t0
        rec = {"step": self.state.step, "epoch": self.state.step / self.steps_per_epoch, **result, "eval_seconds": dt}
        self.state.history.append(rec)
        logger.log(rec)
        return dt

    def _maybe_eval(self, logger: JsonlLogger) -> None:
        """At an evaluation epoch (not the last step: the final evaluation follows): evaluate, re-plan."""
        st = self.state
        if st.step / self.steps_per_epoch < self._next_eval_epoch or st.step >= st.total_steps:
            return
        self._next_eval_epoch += self.o.eval_every_epochs
        started = self.clock()
        eval_seconds = self._run_eval(logger)
        self.method.train()
        st.elapsed = self._elapsed()
        self._set_plan(self.budget.after_eval(st.plan, step=st.step, elapsed=st.elapsed, eval_started=started,
                                              eval_seconds=eval_seconds, now=self.clock()))

    def _elapsed(self) -> float:
        return self._elapsed0 + self.clock() - self._t_fit0

    def _open_bar(self) -> Any:
        if not (self.o.progress and dist.is_main()):
            return None
        from tqdm.auto import tqdm

        interactive = sys.stderr.isatty()  # in a log file, a line every 30 s instead of a redraw
        return tqdm(total=self.state.total_steps, initial=self.state.step, desc="pretrain", unit="step",
                    dynamic_ncols=True, mininterval=0.5 if interactive else 30.0)

    def _begin(self) -> None:
        """Plan (a fresh run: from the epochs) and start this fit's clocks and progress bar."""
        st, every = self.state, self.o.eval_every_epochs
        self.method.train()
        st.plan = self.budget.start(st.plan, step=st.step, now=self.clock())
        self._last_save = self._window_t = self._t_fit0 = self.clock()
        self._window_pairs, self._elapsed0 = 0, st.elapsed
        self._next_eval_epoch = (math.floor(st.step / self.steps_per_epoch / every) + 1) * every if every else math.inf
        self._bar = self._open_bar()

    def fit(self) -> dict[str, Any]:
        """Train until the plan's last step, the budget's end or a stop request; returns :meth:`_summary`."""
        st = self.state
        logger = JsonlLogger(self.run_dir if dist.is_main() else None)
        self._begin()
        micro_batches = self._micro_batches()
        with self._stop_on_signals():
            while st.step < st.total_steps:
                if self._stop_requested:
                    self.stop_reason = f"interrupted at step {st.step}"
                    break
                t_step = self.clock()
                out, extra = self._optimizer_step(micro_batches)
                self._window_pairs += self.batch_size
                step_seconds = self.clock() - t_step
                st.elapsed = self._elapsed()
                self._set_plan(self.budget.after_step(st.plan, step=st.step, elapsed=st.elapsed,
                                                      step_seconds=step_seconds, now=self.clock()))
                if st.step % self.o.log_every == 0 or st.step == st.total_steps:
                    self._log_step(out, extra, logger)
                if self._bar is not None:
                    self._bar.update(1)
                self._maybe_eval(logger)
                if self.budget.exhausted(st.elapsed) and st.step < st.total_steps:
                    self._check_budget_fits(step_seconds)
                    self.stop_reason = f"budget reached at step {st.step} of {st.total_steps}"
                    warnings.warn(f"time budget reached before the schedule ended ({self.stop_reason})", stacklevel=2)
                    break
                self._maybe_checkpoint()
        return self._finish(logger)

    def _check_budget_fits(self, step_seconds: float) -> None:
        """A budget used up before the pace could even be measured is a user error, not a short run."""
        if self.state.step < CALIBRATION_STEPS and self._elapsed0 == 0:
            raise self._halt(f"train.budget ({self.budget.budget_seconds:g} s) ran out after {self.state.step} "
                             f"step(s) of about {step_seconds:.2g} s: too short to train anything (a useful run "
                             f"needs minutes here, e.g. --budget 5m)")

    def _finish(self, logger: JsonlLogger) -> dict[str, Any]:
        """Close the bar; unless interrupted, the final evaluation; save ``last.pt``; the summary."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.stop_reason.startswith("interrupted"):
            self.stop_reason = self.stop_reason or "completed"
            self.state.finished = True
            self._run_eval(logger)
            self.state.elapsed = self._elapsed()
        self.save()
        logger.close()
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        st = self.state
        return {"steps": st.step, "total_steps": st.total_steps, "epochs": st.step / self.steps_per_epoch,
                "seconds": st.elapsed, "stop_reason": self.stop_reason, "precision": self.precision,
                "history": st.history}

"""The one training loop every method uses.

The engine knows the :class:`~byol.methods.base.Method` protocol, an optimizer, a view function and a
:class:`~byol.data.batches.BatchSource` (cached or streamed: it never asks which); it never imports or names a
concrete method (the bar shows what its ``after_step`` reports). It owns: the lr schedule and the position the
method's schedules read, over *optimizer* steps, gradient accumulation, AMP, channels_last, checkpoints (atomic)
and exact resume, measuring the wall-clock budget (:mod:`byol.train.budget` decides the plan), progress bar,
``metrics.jsonl`` / TensorBoard, and the collapse monitor. Under torchrun it trains one model over all processes
(:mod:`byol.train.replicas`): ``batch_size`` is global, rank 0 alone writes files, the others follow.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from byol.runtime import dist
from byol.train.budget import CALIBRATION_STEPS, BudgetPlanner, Plan, short_plan_warning
from byol.config import check_batch
from byol.data.batches import BatchSource, TwoViews, ViewInputs
from byol.data.sampler import BatchIterator
from byol.errors import TrainingError
from byol.train.monitor import collapse_reason, step_stats, snapshot, tracked_weights, update_ratios
from byol.optim.optimizers import set_lr
from byol.train.replicas import Replicas
from byol.run.checkpoints import numbered_name, restore_rng, rng_state, rotate, save_checkpoint
from byol.run.files import JsonlLogger
from byol.runtime.device import PRECISION_NAMES, autocast_for, resolve_amp
from byol.runtime.signals import stop_on_signals
from byol.optim.schedules import warmup_cosine
from byol.train.state import LoopOptions, TrainState

CHECKPOINT_VERSION = 1

__all__ = ["CHECKPOINT_VERSION", "LoopOptions", "TrainState", "Trainer"]


class Trainer:
    """Train ``method`` on the batches of ``data`` (:class:`~byol.data.batches.CachedImages` over uint8
    images, or a streamed run's :class:`~byol.data.streamloader.StreamLoader`) with views from ``augment``.

    ``evaluate`` (optional) is called with the method's encoder every ``eval_every_epochs`` and at
    the end; it returns scalars (e.g. online kNN accuracy) to log.
    """

    def __init__(
        self, method: nn.Module, optimizer: torch.optim.Optimizer,
        augment: TwoViews, data: BatchSource, *,
        batch_size: int, device: torch.device, options: LoopOptions, run_dir: Path | None = None,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        checkpoint_extra: dict[str, Any] | None = None, clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.clock = clock  # injectable for tests of the budget logic
        self.method = method
        self.opt = optimizer
        self.augment = augment
        self.run_dir = Path(run_dir) if run_dir else None
        self.data = data
        self.device = device
        self.o = options
        self.evaluate = evaluate
        self.extra = checkpoint_extra or {}
        self.rank, self.world = dist.rank(), dist.world_size()
        check_batch(batch_size, options.accum_steps, self.world)
        self.replicas = Replicas(method, method.trainable_modules(), device, sync_bn=options.sync_bn)
        self.micro_batch = batch_size // options.accum_steps  # global micro-batch
        self.batch_size = batch_size
        self.batches = BatchIterator(len(data), self.micro_batch, seed=options.seed, rank=self.rank, world_size=self.world)
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
        # one seed on every rank: each draws the views' parameters of the global batch and keeps its part
        self.gen.manual_seed(options.seed * 1000)
        self.state = TrainState()
        self.skipped_steps = 0  #: optimizer steps the gradient scaler skipped (inf/NaN gradients) in this fit
        self._collapse_warned = False
        self._saved_step: int | None = None  #: the step of the last checkpoint written or loaded
        self._stop_asked = False  #: this process was asked to stop (a signal, :meth:`request_stop`)
        self._stop_agreed = False  #: the ranks agreed to stop (some rank was asked; not this process's signal)
        self.stop_reason = ""
        self.plan_warning: str | None = None  #: the short-plan warning of a budgeted run, if it had one
        self._bar: Any = None  # the progress bar of the running fit (tqdm), if any
        self._reported: dict[str, float] = {}  # the method's after_step scalars of the last step (for the bar)
        #: the layers whose relative update size is logged at log steps (``train.update_stats``)
        self._tracked = tracked_weights(method) if options.update_stats else {}

    def request_stop(self) -> None:
        """Ask the loop to save and stop at the next step boundary (what SIGINT/SIGTERM do)."""
        self._stop_asked = True

    def _stop_on_signals(self) -> Any:
        """First Ctrl-C / SIGTERM / SIGUSR1 to this process: stop at the step boundary; a second one to it: at once."""
        return stop_on_signals(lambda: self._stop_asked, self.request_stop)

    def schedule_position(self) -> tuple[float, int]:
        """(position, K) at which the lr and the method's schedules are read for the current step."""
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
        restore_rng(ckpt["rng"], self.gen, reseed=self.o.seed * 1000 + self.state.step)
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
    def _micro_batches(self) -> Iterator[ViewInputs]:
        st = self.state
        while True:
            for batch in self.data.batches(self.batches.indices(st.epoch, st.micro), st.epoch):
                st.micro += 1
                yield batch
            st.epoch += 1
            st.micro = 0

    def _views(self, batch: ViewInputs) -> tuple[Tensor, ...]:
        """(view1, view2, *small): the method is called with all of them (small ones: ``views.small_crops``)."""
        shard = {"shard": self.replicas.shard} if self.world > 1 else {}
        views = batch.views(self.augment, self.gen, self.device, **shard)
        if self.o.channels_last and views[0].dim() == 4:
            views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
        return views

    def _optimizer_step(self, micro_batches: Iterator[ViewInputs]) -> tuple[dict[str, Tensor], dict[str, float] | None]:
        """One optimizer step over ``accum_steps`` micro-batches at the scheduled lr, then the method's
        ``after_step`` (a moving-average twin must see the online weights *after* the optimizer step).

        Returns the last micro-batch's outputs (``loss``: the global batch's) and the method's scalars, or
        None for them when the gradient scaler skipped the step: then nothing moved."""
        position, sched_total = self.schedule_position()
        set_lr(self.opt, warmup_cosine(position, sched_total, self.o.peak_lr, self.state.warmup_steps))
        out: dict[str, Tensor] = {}
        for i in range(self.o.accum_steps):
            views = self._views(next(micro_batches))
            with self.replicas.no_sync(accumulating=i < self.o.accum_steps - 1):
                with self.autocast:
                    out = self.replicas.forward(*views)
                loss_now = self.replicas.mean(out["loss"])  # one rank's inf/NaN makes every rank's mean so
                if not bool(torch.isfinite(loss_now).all()):
                    raise self._halt(f"loss became {float(loss_now)} at step {self.state.step + 1} (lower "
                                     "optim.base_lr or use train.amp=off)")
                loss = out["loss"] / self.o.accum_steps
                (self.scaler.scale(loss) if self.scaler else loss).backward()
        before = snapshot(self._tracked) if self._tracked and self._logs_step(self.state.step + 1) else None
        stepped = self._apply_gradients()
        self.opt.zero_grad(set_to_none=True)
        out = {**out, "loss": loss_now}
        if not stepped:
            return out, None
        extra = self._reported = self.method.after_step(position, sched_total)
        if before is not None:
            extra = {**extra, **update_ratios(before, self._tracked)}
        self.state.step += 1
        return out, extra

    def _logs_step(self, step: int) -> bool:
        """Whether the record of optimizer step ``step`` goes to the log."""
        return step % self.o.log_every == 0 or step == self.state.total_steps

    def _apply_gradients(self) -> bool:
        """``optimizer.step()`` (through the gradient scaler with fp16); False when the scaler skipped it.

        A scaler skips the step when a gradient is inf/NaN and lowers its scale. The skipped step trained
        nothing, so the method's ``after_step`` (e.g. a moving-average twin) must not run and the schedules
        must not advance: the step is retried on the next batch. With DDP every rank sees the same averaged
        gradients, so all ranks skip together."""
        if self.scaler is None:
            self.opt.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(self.opt)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    def _log_step(self, out: dict[str, Tensor], extra: dict[str, float], logger: JsonlLogger) -> None:
        """The step's record (loss, lr, method scalars, throughput, collapse statistics) to the log and bar.

        Every rank computes it (the collapse statistics of the global batch's projections, so all ranks
        take the same stop decision); rank 0 writes it."""
        st, now = self.state, self.clock()
        rec = {"step": st.step, "epoch": st.step / self.steps_per_epoch, "loss": float(out["loss"].detach()),
               "lr": self.opt.param_groups[0]["lr"], **extra, "elapsed_s": self._elapsed0 + now - self._t_fit0,
               "pairs_per_s": self._window_pairs / max(now - self._window_t, 1e-9)}
        if self.skipped_steps:
            rec["skipped_steps"] = self.skipped_steps
        if "proj" in out:
            rec.update(step_stats(out, self.replicas.gather))
            reason = collapse_reason(rec) if st.step > st.warmup_steps else None
            if reason and self.o.stop_on_collapse:
                raise self._halt(f"collapse at step {st.step} (train.stop_on_collapse): " + reason.split(". ")[0])
            if reason and not self._collapse_warned:
                if dist.is_main():
                    warnings.warn(reason, stacklevel=4)
                self._collapse_warned = True
        if dist.is_main():
            logger.log(rec)
        if self._bar is not None:
            shown = {k: f"{v:.4f}" for k, v in self._reported.items()}  # what the method reports
            self._bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.3g}", **shown,
                                  pairs_s=f"{rec['pairs_per_s']:.0f}")
        self._window_t, self._window_pairs = now, 0

    # -- evaluation and the loop -------------------------------------------------------------
    def _run_eval(self, logger: JsonlLogger) -> float:
        if self.evaluate is None:
            return 0.0
        t0 = self.clock()
        result = self.evaluate(self.method.encoder)
        dt = self.clock() - t0
        rec = {"step": self.state.step, "epoch": self.state.step / self.steps_per_epoch, **result, "eval_seconds": dt,
               "elapsed_s": self._elapsed0 + t0 - self._t_fit0}  # training seconds before this evaluation
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
        self._set_plan(self._agreed(self.budget.after_eval(st.plan, step=st.step, elapsed=st.elapsed,
                                                           eval_started=started, eval_seconds=eval_seconds,
                                                           now=self.clock())))

    def _agreed(self, plan: Plan) -> Plan:
        """Rank 0's plan on every rank (without a budget the plan never changes: nothing to share)."""
        return plan if self.budget.budget_seconds is None else self.replicas.plan(plan)

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
        with self._stop_on_signals():  # the final evaluation and save included: a first signal there waits
            while st.step < st.total_steps:
                # one process: when asked; several: once agreed (a rank leaving alone would hang the others)
                if self._stop_agreed if self.world > 1 else self._stop_asked:
                    self.stop_reason = f"interrupted at step {st.step}"
                    break
                if self._train_step(micro_batches, logger):
                    break
            return self._finish(logger)

    def _warn_short_plan(self) -> None:
        """Say if the first plan made from the measured pace is too short to learn. Only the first: warning
        on later re-estimates was tried and fired on a passing slow moment (another process busy) in a run
        that then re-planned to twice the steps and beat random init by 10 points."""
        text = short_plan_warning(total_steps=self.state.total_steps, batch_size=self.batch_size,
                                  steps_per_epoch=self.steps_per_epoch, budget_seconds=self.budget.budget_seconds)
        if text:
            self.plan_warning = text
            warnings.warn(text, stacklevel=3)

    def _check_budget_fits(self, step_seconds: float) -> None:
        """A budget used up before the pace could even be measured is a user error, not a short run."""
        if self.state.step < CALIBRATION_STEPS and self._elapsed0 == 0:
            raise self._halt(f"train.budget ({self.budget.budget_seconds:g} s) ran out after {self.state.step} "
                             f"step(s) of about {step_seconds:.2g} s: too short to train anything (a useful run "
                             f"needs minutes here, e.g. --budget 5m)")

    def _train_step(self, micro_batches: Iterator[ViewInputs], logger: JsonlLogger) -> bool:
        """One optimizer step and what follows it (plan, log, evaluation, checkpoint); True: the budget is
        used up. A step the gradient scaler skipped only counts its time."""
        st = self.state
        t_step = self.clock()
        out, extra = self._optimizer_step(micro_batches)
        self._window_pairs += self.batch_size  # images (pairs of the two views; small views ride along)
        step_seconds = self.clock() - t_step
        st.elapsed = self._elapsed()
        if extra is None:
            self.skipped_steps += 1
        else:
            self._set_plan(self._agreed(self.budget.after_step(st.plan, step=st.step, elapsed=st.elapsed,
                                                               step_seconds=step_seconds, now=self.clock())))
            if st.step == CALIBRATION_STEPS and self._elapsed0 == 0 and dist.is_main():
                self._warn_short_plan()  # at the first measured plan only: a later re-estimate may be a passing slow moment
            if self._logs_step(st.step):
                self._log_step(out, extra, logger)
            if self._bar is not None:
                self._bar.update(1)
            self._maybe_eval(logger)
        # rank 0's budget decision and any rank's stop request (a signal may reach one process only)
        exhausted, self._stop_agreed = self.replicas.agree(
            self.budget.exhausted(st.elapsed) and st.step < st.total_steps, self._stop_asked)
        if exhausted:
            self._check_budget_fits(step_seconds)
            self.stop_reason = f"budget reached at step {st.step} of {st.total_steps}"
            warnings.warn(f"time budget reached before the schedule ended ({self.stop_reason})", stacklevel=3)
            return True
        if extra is not None:
            self._maybe_checkpoint()
        return False

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
                "plan_warning": self.plan_warning,
                "seconds": st.elapsed, "stop_reason": self.stop_reason, "precision": self.precision,
                "history": st.history}

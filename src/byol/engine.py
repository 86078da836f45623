"""The one training loop every method uses.

The engine knows the :class:`~byol.methods.base.Method` protocol, an optimizer, a view function and
a source of uint8 batches; it never imports a concrete method. It owns: lr and EMA schedules over
*optimizer* steps, gradient accumulation, AMP, channels_last, checkpoints (atomic) and exact resume,
the wall-clock budget, progress bar, ``metrics.jsonl`` / TensorBoard, and the collapse monitor.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from byol import dist
from byol.config import check_batch
from byol.data.loader import BatchIterator, gather_batch
from byol.monitor import COLLAPSE_ADVICE, collapse_stats, is_collapsed
from byol.optim import set_lr
from byol.rundir import JsonlLogger, atomic_save
from byol.runtime.device import PRECISION_NAMES, autocast_for, resolve_amp
from byol.schedules import warmup_cosine, warped_step

CHECKPOINT_VERSION = 1


@dataclass
class LoopOptions:
    """Everything about *how* to train (not what): explicit values, no config object."""

    epochs: float
    peak_lr: float
    warmup_epochs: float = 10.0
    accum_steps: int = 1
    budget_seconds: float | None = None
    amp: str = "auto"  # auto (see resolve_amp) | off | fp16 | bf16
    channels_last: bool = True
    log_every: int = 20
    ckpt_every: int = 1000
    ckpt_seconds: float = 300.0
    eval_every_epochs: float = 1.0
    seed: int = 0
    progress: bool = True
    #: re-estimate the step budget at epoch ends until this fraction of the run is done (the schedules
    #: are re-mapped continuously, see TrainState.sched_total)
    budget_reestimate_until: float = 0.9
    #: share of the remaining time planned for (the rest absorbs speed noise)
    budget_margin: float = 0.97
    #: between those re-estimates (and after the last one), the wall-clock pace of this many recent steps
    #: is checked after every step; when it says the plan no longer fits, the plan is shortened (re-mapped
    #: like a re-estimate) so that the schedules still end at the last step instead of being cut off
    budget_pace_window: int = 32


@dataclass
class TrainState:
    step: int = 0  #: optimizer steps done
    micro: int = 0  #: micro-batches consumed in the current epoch
    epoch: int = 0
    total_steps: int = 0  #: optimizer steps the run will take (the loop's end)
    warmup_steps: int = 0
    #: K of the lr/tau schedules when a budget re-plan changed ``total_steps`` after warmup (0: none).
    #: Steps from ``anchor_step`` to ``total_steps`` then map linearly onto the schedule positions
    #: ``anchor_value`` .. ``sched_total`` (schedules.warped_step), so lr and tau never jump.
    sched_total: int = 0
    anchor_step: int = 0
    anchor_value: float = 0.0
    elapsed: float = 0.0  #: training seconds used so far (across resumes)
    history: list[dict[str, Any]] = field(default_factory=list)  #: eval results per epoch


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    return ys[len(ys) // 2]


class Trainer:
    """Train ``method`` on uint8 ``images`` with views from ``augment``.

    ``evaluate`` (optional) is called with the method's encoder every ``eval_every_epochs`` and at
    the end; it returns scalars (e.g. online kNN accuracy) to log.
    """

    def __init__(
        self,
        method: nn.Module,
        optimizer: torch.optim.Optimizer,
        augment: Callable[[Tensor, torch.Generator | None], tuple[Tensor, Tensor]],
        images: Tensor,
        *,
        batch_size: int,
        device: torch.device,
        options: LoopOptions,
        run_dir: Path | None = None,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.clock = clock  # injectable for tests of the budget logic
        self.method = method
        self.opt = optimizer
        self.augment = augment
        self.images = images
        self.device = device
        self.o = options
        self.run_dir = Path(run_dir) if run_dir else None
        self.evaluate = evaluate
        self.extra = checkpoint_extra or {}
        self.rank, self.world = dist.rank(), dist.world_size()
        check_batch(batch_size, options.accum_steps, self.world)
        self.micro_batch = batch_size // options.accum_steps  # global micro-batch
        self.batch_size = batch_size
        self.batches = BatchIterator(len(images), self.micro_batch, seed=options.seed, rank=self.rank, world_size=self.world)
        self.micro_per_epoch = self.batches.steps_per_epoch
        self.steps_per_epoch = self.micro_per_epoch / options.accum_steps
        amp = resolve_amp(device, options.amp)
        self.precision = PRECISION_NAMES[amp]
        self.autocast, self.scaler = autocast_for(device, amp)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(options.seed * 1000 + self.rank)
        self.state = TrainState()
        self._collapse_warned = False
        self._stop_requested = False
        self.stop_reason = ""

    def request_stop(self) -> None:
        """Ask the loop to save and stop at the next step boundary (what SIGINT/SIGTERM do)."""
        self._stop_requested = True

    def _install_signal_handlers(self):
        """First Ctrl-C / SIGTERM: stop cleanly at the step boundary; a second one: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
        return previous

    # -- schedules ---------------------------------------------------------------------------
    def _plan(
        self, step_seconds: float | None = None, eval_seconds: float = 0.0, *, remap: bool = False, shrink_only: bool = False
    ) -> None:
        """Set K (total optimizer steps) and warmup from epochs, or from the remaining budget.

        ``remap``: a re-estimate during training; after warmup it changes the run's length without
        moving the schedules (see TrainState.sched_total). The first plans (from epochs, then from the
        calibration steps) set K directly. ``shrink_only``: keep the plan unless it is now too long.
        """
        st = self.state
        by_epochs = max(1, math.ceil(self.o.epochs * self.steps_per_epoch))
        total = by_epochs
        if self.o.budget_seconds is not None and step_seconds:
            remaining = (self.o.budget_seconds - st.elapsed) * self.o.budget_margin
            per_step = self._seconds_per_step(step_seconds, eval_seconds)
            # the final evaluation also has to fit in the budget
            budget_steps = st.step + max(1, int((remaining - eval_seconds) / per_step))
            total = min(by_epochs, budget_steps)
        total = max(total, st.step + 1)
        if shrink_only and total >= st.total_steps:
            return
        if remap and st.step >= st.warmup_steps:
            # A re-plan after warmup: keep the schedules' K and re-map the remaining steps onto the
            # remaining schedule, so lr and tau continue from where they are (no jump).
            if total != st.total_steps:
                position, sched_total = self.schedule_position()
                st.sched_total, st.anchor_step, st.anchor_value = sched_total, st.step, position
                st.total_steps = total
            return
        st.total_steps = total
        # Warmup never takes more than a fifth of a (short, budgeted) run.
        st.warmup_steps = min(int(round(self.o.warmup_epochs * self.steps_per_epoch)), st.total_steps // 5)

    def _seconds_per_step(self, step_seconds: float, eval_seconds: float) -> float:
        """A step's wall time plus its share of the periodic evaluations (spread over the steps between two)."""
        if self.o.eval_every_epochs and self.evaluate is not None:
            return step_seconds + eval_seconds / (self.o.eval_every_epochs * self.steps_per_epoch)
        return step_seconds

    def schedule_position(self) -> tuple[float, int]:
        """(position, K) at which the lr and tau schedules are read for the current step."""
        st = self.state
        if not st.sched_total:
            return float(st.step), st.total_steps
        return warped_step(st.step, st.total_steps, st.anchor_step, st.anchor_value, st.sched_total), st.sched_total

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        st = self.state
        return {
            "version": CHECKPOINT_VERSION,
            "method": self.method.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "state": st.__dict__.copy(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "augment": self.gen.get_state(),
            },
            **self.extra,
        }

    def save(self, numbered: bool = False) -> None:
        if not self.run_dir or not dist.is_main():
            return
        ckpt = self.checkpoint()
        atomic_save(ckpt, self.run_dir / "checkpoints" / "last.pt")
        if numbered:
            atomic_save(ckpt, self.run_dir / "checkpoints" / f"step{self.state.step:07d}.pt")
        self._last_save = self.clock()

    def load(self, ckpt: dict[str, Any]) -> None:
        self.method.load_state_dict(ckpt["method"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.gen.set_state(rng["augment"].to(self.gen.get_state().device) if hasattr(rng["augment"], "to") else rng["augment"])

    # -- the loop ----------------------------------------------------------------------------
    def _micro_batches(self) -> Iterator[Tensor]:
        st = self.state
        while True:
            for idx in self.batches.indices(st.epoch, st.micro):
                st.micro += 1
                yield idx
            st.epoch += 1
            st.micro = 0

    def _views(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        x = gather_batch(self.images, idx, self.device)
        v1, v2 = self.augment(x, self.gen)
        if self.o.channels_last and v1.dim() == 4:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2

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

    def fit(self) -> dict[str, Any]:
        o, st = self.o, self.state
        main = dist.is_main()
        logger = JsonlLogger(self.run_dir if main else None)
        self.method.train()
        if st.total_steps == 0:
            self._plan()
        calibrating = o.budget_seconds is not None and st.step == 0
        step_times: list[float] = []  # compute time of the last steps (the calibration uses these)
        eval_seconds = 0.0
        self._last_save = self.clock()
        bar = None
        if o.progress and main:
            from tqdm.auto import tqdm

            import sys

            interactive = sys.stderr.isatty()  # in a log file, a line every 30 s instead of a redraw
            bar = tqdm(total=st.total_steps, initial=st.step, desc="pretrain", unit="step", dynamic_ncols=True,
                       mininterval=0.5 if interactive else 30.0)
        micro_iter = self._micro_batches()
        next_eval_epoch = (math.floor(st.step / self.steps_per_epoch / o.eval_every_epochs) + 1) * o.eval_every_epochs if o.eval_every_epochs else math.inf
        window_t, window_pairs = self.clock(), 0
        pace_t, pace_step = self.clock(), st.step
        t_fit0, elapsed0 = self.clock(), st.elapsed
        recent: deque[float] = deque(maxlen=max(1, o.budget_pace_window))  # wall seconds of recent steps
        last_end = self.clock()
        previous_handlers = self._install_signal_handlers()
        try:
            while st.step < st.total_steps:
                if self._stop_requested:
                    self.stop_reason = f"interrupted at step {st.step}"
                    break
                t_step = self.clock()
                position, sched_total = self.schedule_position()
                set_lr(self.opt, warmup_cosine(position, sched_total, o.peak_lr, st.warmup_steps))
                out: dict[str, Tensor] = {}
                for _ in range(o.accum_steps):
                    v1, v2 = self._views(next(micro_iter))
                    with self.autocast:
                        out = self.method(v1, v2)
                    loss = out["loss"] / o.accum_steps
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
                if self.scaler:
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                extra = self.method.after_step(position, sched_total)
                st.step += 1
                window_pairs += self.batch_size
                dt = self.clock() - t_step
                st.elapsed = elapsed0 + self.clock() - t_fit0
                step_times = (step_times + [dt])[-50:]
                if calibrating and len(step_times) == 8:  # the first steps pay warm-up costs: use the last 5
                    self._plan(_median(step_times[3:]), eval_seconds)
                    calibrating = False
                    recent.clear()  # the first steps pay warm-up costs
                    if bar:
                        bar.total = st.total_steps
                now = self.clock()
                recent.append(now - last_end)  # the whole step: logging and checkpoints included
                last_end = now
                if o.budget_seconds is not None and not calibrating and len(recent) == recent.maxlen:
                    # the host slowed down since the last plan: shorten the run before the hard stop cuts it
                    pace_recent = sum(recent) / len(recent)
                    left = (st.total_steps - st.step) * self._seconds_per_step(pace_recent, eval_seconds)
                    if st.elapsed + left + eval_seconds > o.budget_seconds:
                        before = st.total_steps
                        self._plan(pace_recent, eval_seconds, remap=True, shrink_only=True)
                        if bar and st.total_steps != before:
                            bar.total = st.total_steps
                if st.step % o.log_every == 0 or st.step == st.total_steps:
                    now = self.clock()
                    rec = {
                        "step": st.step,
                        "epoch": st.step / self.steps_per_epoch,
                        "loss": float(out["loss"].detach()),
                        "lr": self.opt.param_groups[0]["lr"],
                        **extra,
                        "pairs_per_s": window_pairs / max(now - window_t, 1e-9),
                    }
                    if "proj" in out:
                        rec.update(collapse_stats(out["proj"]))
                        if st.step > st.warmup_steps and is_collapsed(rec) and not self._collapse_warned:
                            warnings.warn(COLLAPSE_ADVICE.format(**rec), stacklevel=2)
                            self._collapse_warned = True
                    if not math.isfinite(rec["loss"]):
                        raise FloatingPointError(
                            f"loss became {rec['loss']} at step {st.step}: lower optim.base_lr or use amp=off"
                        )
                    if main:
                        logger.log(rec)
                    if bar:
                        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.3g}", tau=f"{extra.get('tau', 0):.4f}", pairs_s=f"{rec['pairs_per_s']:.0f}")
                    window_t, window_pairs = now, 0
                if bar:
                    bar.update(1)
                epoch_now = st.step / self.steps_per_epoch
                if epoch_now >= next_eval_epoch and st.step < st.total_steps:
                    next_eval_epoch += o.eval_every_epochs
                    # wall-clock pace since the last evaluation: every per-step cost (logging, progress
                    # bar, checkpoints, a slow step now and then) included, unlike the steps' own times
                    pace = (self.clock() - pace_t) / max(1, st.step - pace_step)
                    eval_seconds = self._run_eval(logger)
                    self.method.train()
                    st.elapsed = elapsed0 + self.clock() - t_fit0
                    if o.budget_seconds is not None and epoch_now <= o.budget_reestimate_until * st.total_steps / self.steps_per_epoch:
                        self._plan(pace, eval_seconds, remap=True)
                        if bar:
                            bar.total = st.total_steps
                    pace_t, pace_step = self.clock(), st.step
                    last_end = self.clock()  # the evaluation's time is not part of the steps' pace
                if o.budget_seconds is not None and st.elapsed >= o.budget_seconds and st.step < st.total_steps:
                    self.stop_reason = f"budget reached at step {st.step} of {st.total_steps}"
                    warnings.warn(f"time budget reached before the schedule ended ({self.stop_reason})", stacklevel=2)
                    break
                if main and self.run_dir and (st.step % o.ckpt_every == 0):
                    self.save(numbered=True)
                elif main and self.run_dir and self.clock() - self._last_save > o.ckpt_seconds:
                    self.save()
        finally:
            for sig, h in previous_handlers.items():
                signal.signal(sig, h)
        if bar:
            bar.close()
        if self.stop_reason.startswith("interrupted"):
            self.save()
            logger.close()
            return self._summary()
        if not self.stop_reason:
            self.stop_reason = "completed"
        self._run_eval(logger)
        st.elapsed = elapsed0 + self.clock() - t_fit0
        self.save()
        logger.close()
        return self._summary()

    def _summary(self) -> dict[str, Any]:
        st = self.state
        return {
            "steps": st.step,
            "total_steps": st.total_steps,
            "epochs": st.step / self.steps_per_epoch,
            "seconds": st.elapsed,
            "stop_reason": self.stop_reason,
            "precision": self.precision,
            "history": st.history,
        }

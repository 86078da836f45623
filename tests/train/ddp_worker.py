"""One process of a multi-process test run, started by tests/train/test_distributed.py with torchrun's environment
(MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK).

``python ddp_worker.py OUT_DIR RUN_DIR OVERRIDES_JSON``: pretrains the tiny preset with the overrides in
RUN_DIR through :func:`byol.train.pretrain.run_pretrain`, then writes (outside RUN_DIR) ``rankR.pt``, the method's
state on this rank, and ``rankR.json``, every file-system write this process made inside RUN_DIR (seen by
an audit hook), its summary's steps and stop reason.

``BYOL_TEST_SCENARIO`` (optional) names a fault to inject first (:data:`SCENARIOS`), e.g. a stop signal at
the worst moment on one rank.
"""

import json
import os
import sys
from pathlib import Path

out, run_dir, overrides = Path(sys.argv[1]), Path(sys.argv[2]).resolve(), json.loads(sys.argv[3])
writes: list[str] = []
_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.link", "os.symlink", "shutil.rmtree"}


def _audit(event: str, args: tuple) -> None:
    """Record every write under RUN_DIR: opened for writing, created, renamed or removed."""
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    elif event in _WRITE_EVENTS:
        path, writing = args[0], True
    else:
        return
    if writing and isinstance(path, (str, bytes, os.PathLike)):
        p = Path(os.fsdecode(path)).resolve()
        if p == run_dir or run_dir in p.parents:
            writes.append(f"{event} {p}")


sys.addaudithook(_audit)

import torch  # noqa: E402

from byol.config import find_preset  # noqa: E402
from byol.train.config import build_config  # noqa: E402
from byol.train.pretrain import run_pretrain  # noqa: E402

rank = int(os.environ["RANK"])


def _signal_self() -> None:
    """SIGUSR1 to this process, as SLURM's pre-emption warning: Python runs the handler before returning."""
    import signal

    os.kill(os.getpid(), signal.SIGUSR1)


def _signal_after_agreement() -> None:
    """Rank 1 is signalled after step 3's stop agreement (no stop agreed), before the loop checks it."""
    from byol.train.loop import Trainer

    checkpoint = Trainer._maybe_checkpoint

    def late(self):
        if rank == 1 and self.state.step == 3:
            _signal_self()
        return checkpoint(self)

    Trainer._maybe_checkpoint = late


def _own_signal_after_agreed_stop(where: str) -> None:
    """Rank 0 is signalled during step 3 (a stop all ranks agree on); rank 1 gets its own first signal after
    that agreement: in step 3's checkpoint check (``where="checkpoint"``) or in the final save (``"save"``)."""
    from byol.train.loop import Trainer

    step, late = Trainer._optimizer_step, getattr(Trainer, "_maybe_checkpoint" if where == "checkpoint" else "save")

    def signalled_step(self, micro_batches):
        out = step(self, micro_batches)
        if rank == 0 and self.state.step == 3:
            _signal_self()
        return out

    def signalled_late(self, *args, **kwargs):
        if rank == 1 and self.state.step == 3 and not getattr(self, "_test_signalled", False):
            self._test_signalled = True  # one signal only: a second one rightly stops at once
            _signal_self()
        return late(self, *args, **kwargs)

    Trainer._optimizer_step = signalled_step
    setattr(Trainer, late.__name__, signalled_late)


def _small_stream_sample() -> None:
    """The streamed run's in-memory sample holds 4 files: the broken ones are found while streaming."""
    import byol.data.stream

    byol.data.stream.SAMPLE_IMAGES = 4


SCENARIOS = {"signal_after_agreement": _signal_after_agreement,
             "own_signal_in_checkpoint_check": lambda: _own_signal_after_agreed_stop("checkpoint"),
             "own_signal_in_final_save": lambda: _own_signal_after_agreed_stop("save"),
             "small_stream_sample": _small_stream_sample}
if os.environ.get("BYOL_TEST_SCENARIO"):
    SCENARIOS[os.environ["BYOL_TEST_SCENARIO"]]()
cfg = build_config(files=[find_preset("tiny")], overrides=overrides)
summary = run_pretrain(cfg, run_dir)
torch.save(summary["method"].state_dict(), out / f"rank{rank}.pt")
(out / f"rank{rank}.json").write_text(json.dumps({"writes": writes, "steps": summary["steps"],
                                                  "stop_reason": summary["stop_reason"],
                                                  "history": summary["history"]}))

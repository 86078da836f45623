"""A run directory on disk: atomic checkpoint writes, ``metrics.jsonl`` (+ TensorBoard), ``env.json``,
the resolved ``config.yaml``, and reading checkpoints back. Every file but the appended ``metrics.jsonl``
is written whole through :func:`byol.atomic.atomic_write`.

Layout: ``config.yaml`` (fully resolved, sizes as asked), ``env.json`` (versions, device, git commit, the
resolved :class:`~byol.data.sizes.Sizes`), ``metrics.jsonl``,
``tb/``, ``checkpoints/last.pt`` (+ numbered ones), ``summary.json``, ``skipped_files.txt``. A new run in
a directory that held one first removes these (:func:`clear_run_files`).
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from byol import __version__

from byol.atomic import atomic_write
from byol.run import checkpoints
from byol.config import ModelConfig, load_yaml, parse_section
from byol.data.sizes import Sizes
from byol.errors import ByolError

#: The summary keys written to ``summary.json`` (the engine's summary has more, e.g. the objects it built);
#: ``verdict`` is the encoder against random init after training (:mod:`byol.train.verdict`).
SUMMARY_KEYS = ("steps", "total_steps", "epochs", "seconds", "stop_reason", "precision", "plan_warning", "history",
                "verdict")


class JsonlLogger:
    """Appends one JSON object per line to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path | None, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl" if run_dir else None
        self.tb = None
        if run_dir and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except Exception as exc:  # tensorboard missing or broken: metrics.jsonl still has everything
                warnings.warn(f"TensorBoard logging disabled ({exc})", stacklevel=2)

    def log(self, record: dict[str, Any]) -> None:
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.tb:
            step = int(record.get("step", 0))
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


@functools.lru_cache(maxsize=1)
def _git_state() -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the checkout this package runs from (``("", None)`` outside a git checkout).

    Read once per process: the code a process runs is what it imported at its start, so a commit made while
    a long sweep runs must not be credited with the sweep's later records. Entry points call
    :func:`pin_code_state` first thing."""
    here = Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=here).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit, (bool(git("status", "--porcelain", "--untracked-files=no", "--", str(here.parent)))
                        if commit else None)
    except Exception:  # noqa: BLE001 - no git, not a checkout: the commit is simply unknown
        return "", None


def code_changed(provenance: dict[str, Any]) -> str | None:
    """A warning line when ``provenance`` (a record of another process, e.g. a pool worker of a sweep) names
    other code than this process runs: a commit or an edit made while the sweep ran. Each process records the
    code it imported, so the record is true, but a table of the sweep's records then mixes code."""
    here = _git_state()
    there = (provenance.get("git_commit", ""), provenance.get("git_dirty"))
    if not here[0] or here == there:
        return None

    def name(c: tuple[str, bool | None]) -> str:
        return c[0][:10] + (" with uncommitted changes" if c[1] else "")
    return (f"  warning: this cell ran {name(there)}, the sweep started at {name(here)}: the code changed while it "
            "ran (its record says so; the report lists the commits)")


def pin_code_state() -> None:
    """Record now which commit this process runs (:func:`_git_state`), before any long work starts."""
    _git_state()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info(device: torch.device) -> dict[str, Any]:
    """What ran where: versions, device, threads, git commit, argv, time (``env.json``)."""
    import torchvision

    commit, dirty = _git_state()
    return {
        "byol": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": dirty,  #: uncommitted changes to the package's files when it ran (None: unknown)
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def run_config_file(run_dir: Path) -> Path:
    """``run_dir/config.yaml`` (ByolError if ``run_dir`` is not a run directory). The whole config is
    parsed above the methods (:func:`byol.train.config.load_run_config`); below, :func:`read_run_config`."""
    f = Path(run_dir) / "config.yaml"
    if not f.is_file():
        raise ByolError(f"{run_dir} is not a run directory (no config.yaml); start a run with `byol pretrain`")
    return f


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The stored config of a run directory as a dict, for code that parses the sections it needs
    (:func:`byol.config.parse_section`)."""
    return load_yaml(run_config_file(run_dir))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A verified checkpoint on the CPU, read without running code (:func:`byol.run.checkpoints.read_checkpoint`)."""
    return checkpoints.read_checkpoint(path)


#: The files a run writes at the top of its directory (besides ``checkpoints/`` and ``tb/``).
RUN_FILES = ("config.yaml", "env.json", "metrics.jsonl", "summary.json", "skipped_files.txt")


def clear_run_files(run_dir: Path) -> None:
    """Remove what an earlier run wrote in ``run_dir``, before a new run starts there: its :data:`RUN_FILES`,
    checkpoints (:func:`byol.run.checkpoints.remove_all`) and TensorBoard event files. Otherwise the new run
    would append to the old ``metrics.jsonl`` (its collapse record read by the verdict as the new run's) and
    keep the old numbered checkpoints (rotation would delete the new run's lower-numbered ones instead).
    Files byol did not write (a user's notes, anything else in those folders) stay."""
    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    checkpoints.remove_all(run_dir / "checkpoints")
    for p in (run_dir / "tb").glob("events.out.tfevents.*"):
        p.unlink(missing_ok=True)


def write_run_files(run_dir: Path, resolved: dict[str, Any], env: dict[str, Any], skipped: list[str],
                    reasons: dict[str, str] | None = None) -> None:
    """The files a new run starts with: ``config.yaml``, ``env.json``, ``skipped_files.txt``.

    ``skipped_files.txt`` has one ``path<TAB>reason`` line per skipped file, the path relative to the data
    folder, its bytes exactly as on disk (names that are not UTF-8 are written back as they were)."""
    write_config(run_dir, resolved)
    atomic_write(run_dir / "env.json", json.dumps(env, indent=2))
    write_skipped(run_dir, skipped, reasons)


def write_skipped(run_dir: Path, skipped: list[str], reasons: dict[str, str] | None = None) -> None:
    """``skipped_files.txt`` (see :func:`write_run_files`); also rewritten by a streamed run whenever an
    epoch finds more unusable files."""
    if skipped:
        reasons = reasons or {}
        lines = "".join(f"{f}\t{reasons.get(f, 'unreadable')}\n" for f in skipped)
        atomic_write(run_dir / "skipped_files.txt", lines, encoding="utf-8", errors="surrogateescape")


def write_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    """``config.yaml``: the fully resolved config of the run."""
    import yaml

    atomic_write(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def last_record(run_dir: Path, key: str) -> dict[str, Any] | None:
    """The last record of the run's ``metrics.jsonl`` that holds ``key`` (None: no file or no such record)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    with open(path) as fh:
        hits = [line for line in fh if f'"{key}"' in line]
    for line in reversed(hits):
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut short by a kill: the one before it counts
            continue
        if key in rec:
            return rec
    return None


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write(run_dir / "summary.json", json.dumps({k: v for k, v in summary.items() if k in SUMMARY_KEYS}, indent=2))


def checkpoint_path(path: Path) -> Path:
    """``path`` itself for a file, ``path/checkpoints/last.pt`` for a run directory."""
    path = Path(path)
    return last_checkpoint(path) if path.is_dir() else path


def run_sizes(run_dir: Path, config: dict[str, Any]) -> Sizes | None:
    """The :class:`Sizes` a run directory stored in ``env.json`` (a run written before they were stored: from
    its ``config``, see :meth:`Sizes.stored`)."""
    env: dict[str, Any] = {}
    path = Path(run_dir) / "env.json"
    if path.is_file():
        try:
            env = json.loads(path.read_text())
        except ValueError:  # a damaged env.json says nothing about sizes
            env = {}
    return Sizes.stored(env, config)


def load_encoder(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The online encoder of a run directory or checkpoint file, with the run's resolved config (a dict)."""
    enc, config, _ = load_run_encoder(path, device)
    return enc, config


def load_run_encoder(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any],
                                                                             Sizes | None]:
    """:func:`load_encoder` and the run's :class:`Sizes` (stored in the checkpoint, else from its config)."""
    from byol.models.factory import build_encoder

    ckpt_path = checkpoint_path(path)
    if not ckpt_path.is_file():
        raise ByolError(f"no checkpoint at {ckpt_path}")
    ckpt = read_checkpoint(ckpt_path)
    enc = build_encoder(parse_section(ModelConfig, ckpt["config"], "model"), ckpt["in_channels"])
    state = {k[len("encoder."):]: v for k, v in ckpt["method"].items() if k.startswith("encoder.")}
    enc.load_state_dict(state, strict=True)
    return enc.to(device), ckpt["config"], Sizes.stored(ckpt, ckpt["config"])

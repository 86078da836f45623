"""``byol reproduce``: the paper's comparisons and ablations at a chosen scale, resumable cell by cell.

>>> from byol.reproduce import Scale, reproduce
>>> reproduce("tau", Scale("cifar10", data="cifar10.zip", budget="2m"), seeds=(0, 1), out_dir="docs/results")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from byol.config import find_preset
from byol.train.config import build_config
from byol.reproduce.report import summarize, write_report
from byol.reproduce.runner import Scale, cell_id, run_cells, run_study_cells
from byol.reproduce.studies import STUDY_NAMES, Cell, Study, get_study

__all__ = ["STUDY_NAMES", "Cell", "Scale", "Study", "cell_id", "reproduce", "run_studies_cells", "study_for",
           "summarize"]


def study_for(name: str, scale: Scale, batch_sizes: tuple[int, ...] | None = None) -> Study:
    """The study ``name`` for ``scale``. The batch ladder defaults to the preset's batch, 1/4 and 1/16 of it:
    the paper's BYOL lost 0.7 points and SimCLR 3.6 from 4096 to 256 (1/16), Table 16."""
    # as the BYOL cells run: the preset's tau_base when it is a BYOL preset, else BYOL's default
    cfg = build_config(files=[find_preset(scale.preset)], overrides=[*scale.overrides, "method.name=byol"])
    b = cfg.optim.batch_size
    ladder = tuple(batch_sizes) if batch_sizes else tuple(dict.fromkeys((b, max(2, b // 4), max(2, b // 16))))
    return get_study(name, batch_ladder=ladder, preset_tau=cfg.method.tau_base)


def reproduce(
    name: str, scale: Scale, *, seeds: tuple[int, ...] = (0, 1), out_dir: str | Path = "reproduce",
    runs_dir: str | Path | None = None, batch_sizes: tuple[int, ...] | None = None, command: str = "",
    jobs: int = 1, train: bool = True, log: Callable[[str], None] = print,
) -> tuple[Path, Path | None]:
    """Run the missing cells of study ``name`` (records in ``out_dir/cells``; ``jobs`` cells at a time),
    then write its report (``train=False``: the report of the cells recorded so far, training nothing)."""
    out_dir = Path(out_dir)
    study = study_for(name, scale, batch_sizes)
    records = run_study_cells(study.cells, scale, seeds, out_dir / "cells", _runs(runs_dir), jobs=jobs,
                              train=train, log=log)
    return write_report(study, records, out_dir, command=command or f"byol reproduce {name}",
                        scale=scale.describe(), seeds=seeds)


def run_studies_cells(
    names: tuple[str, ...], scale: Scale, *, seeds: tuple[int, ...] = (0, 1), out_dir: str | Path = "reproduce",
    runs_dir: str | Path | None = None, batch_sizes: tuple[int, ...] | None = None, jobs: int = 1,
    log: Callable[[str], None] = print,
) -> None:
    """Run the missing cells of several studies as one pool (a cell two studies share runs once), so that
    ``jobs`` processes stay busy across study boundaries; the reports are written by :func:`reproduce`."""
    todo = [(c, s) for n in names for c in study_for(n, scale, batch_sizes).cells for s in seeds]
    run_cells(todo, scale, Path(out_dir) / "cells", _runs(runs_dir), jobs=jobs, log=log)


def _runs(runs_dir: str | Path | None) -> Path:
    return Path(runs_dir) if runs_dir else Path("runs") / "reproduce"

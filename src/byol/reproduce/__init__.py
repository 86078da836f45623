"""``byol reproduce``: the paper's comparisons and ablations at a chosen scale, resumable cell by cell.

>>> from byol.reproduce import Scale, reproduce
>>> reproduce("tau", Scale("cifar10", data="cifar10.zip", budget="2m"), seeds=(0, 1), out_dir="docs/results")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from byol.config import find_preset
from byol.train.config import build_config
from byol.reproduce.report import summarize, write_report
from byol.reproduce.recipes import available, equal_time_cells
from byol.reproduce.runner import Scale, cell_id, run_cells, run_pairs, run_study_cells
from byol.reproduce.studies import STUDY_NAMES, Cell, Study, get_study

__all__ = ["STUDY_NAMES", "Cell", "Scale", "Study", "cell_id", "reproduce", "run_studies_cells", "study_for",
           "summarize"]


def study_for(name: str, scale: Scale, batch_sizes: tuple[int, ...] | None = None, *, equal_time: bool = False,
              equal_steps: bool = False) -> Study:
    """The study ``name`` for ``scale``. The batch ladder defaults to the preset's batch, 1/4 and 1/16 of it:
    the paper's BYOL lost 0.7 points and SimCLR 3.6 from 4096 to 256 (1/16), Table 16. ``equal_time`` adds the
    baselines' claims at BYOL's wall time; ``equal_steps`` trains the batch ladder at equal steps."""
    # as the BYOL cells run: the preset's tau_base when it is a BYOL preset, else BYOL's default
    cfg = build_config(files=[find_preset(scale.preset)], overrides=[*scale.overrides, "method.name=byol"])
    b = cfg.optim.batch_size
    ladder = tuple(batch_sizes) if batch_sizes else tuple(dict.fromkeys((b, max(2, b // 4), max(2, b // 16))))
    return get_study(name, batch_ladder=ladder, preset_tau=cfg.method.tau_base, equal_time=equal_time,
                     equal_steps=equal_steps)


def reproduce(
    name: str, scale: Scale, *, seeds: tuple[int, ...] = (0, 1), out_dir: str | Path = "reproduce",
    runs_dir: str | Path | None = None, batch_sizes: tuple[int, ...] | None = None, command: str = "",
    jobs: int = 1, train: bool = True, equal_time: bool = False, equal_steps: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path | None]:
    """Run the missing cells of study ``name`` (records in ``out_dir/cells``; ``jobs`` cells at a time),
    then write its report (``train=False``: the report of the cells recorded so far, training nothing).
    Cells whose method or recipe preset this version lacks are skipped with a line each. ``equal_time``: then
    each non-BYOL cell again, for the wall time BYOL's cell took at the same seed (baselines only)."""
    out_dir = Path(out_dir)
    study = study_for(name, scale, batch_sizes, equal_time=equal_time, equal_steps=equal_steps)
    cells = available(study.cells, log)
    keys = {c.key for c in cells}
    study = dataclasses.replace(study, cells=cells, claims=tuple(
        c for c in study.claims if all(k.split("@")[0] in keys for k in c.cells)))
    cells_dir, runs = out_dir / "cells", _runs(runs_dir)
    records = run_study_cells(study.cells, scale, seeds, cells_dir, runs, jobs=jobs, train=train, log=log)
    if study.extra.get("equal_time"):
        byol = {int(r["seed"]): r for r in records.get("byol", [])}
        pairs = equal_time_cells(study.cells, byol)
        records.update(run_pairs(pairs, scale, cells_dir, runs, jobs=jobs, train=train, log=log))
        study = dataclasses.replace(study, cells=(*study.cells, *dict.fromkeys(
            dataclasses.replace(c, budget=None) for c, _ in pairs)))  # one row per cell (its budget is per seed)
    return write_report(study, records, out_dir, command=command or f"byol reproduce {name}",
                        scale=scale.describe(), seeds=seeds)


def run_studies_cells(
    names: tuple[str, ...], scale: Scale, *, seeds: tuple[int, ...] = (0, 1), out_dir: str | Path = "reproduce",
    runs_dir: str | Path | None = None, batch_sizes: tuple[int, ...] | None = None, jobs: int = 1,
    equal_time: bool = False, equal_steps: bool = False, log: Callable[[str], None] = print,
) -> None:
    """Run the missing cells of several studies as one pool (a cell two studies share runs once), so that
    ``jobs`` processes stay busy across study boundaries; the reports are written by :func:`reproduce`."""
    fair = dict(equal_time=equal_time, equal_steps=equal_steps)
    todo = [(c, s) for n in names for c in available(study_for(n, scale, batch_sizes, **fair).cells, lambda _: None)
            for s in seeds]
    run_cells(todo, scale, Path(out_dir) / "cells", _runs(runs_dir), jobs=jobs, log=log)


def _runs(runs_dir: str | Path | None) -> Path:
    return Path(runs_dir) if runs_dir else Path("runs") / "reproduce"

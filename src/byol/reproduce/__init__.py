"""``byol reproduce``: the paper's comparisons and ablations at a chosen scale, resumable cell by cell.

>>> from byol.reproduce import Scale, reproduce
>>> reproduce("tau", Scale("cifar10", data="cifar10.zip", budget="2m"), seeds=(0, 1), out_dir="docs/results")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from byol.config import find_preset
from byol.train.config import build_config
from byol.reproduce.ladder import epochs_phrase
from byol.reproduce.report import report_command, summarize, write_report
from byol.reproduce.recipes import available, equal_time_cells, timed_elsewhere
from byol.reproduce.runner import Scale, cell_id, load_records, run_jobs, run_ladder
from byol.reproduce.studies import STUDY_NAMES, Cell, Study, get_study

__all__ = ["STUDY_NAMES", "Cell", "Scale", "Study", "cell_id", "cells_by_study", "reproduce", "rungs",
           "run_studies_cells", "study_for", "summarize"]


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


def rungs(scale: Scale, epochs: tuple[float, ...] = ()) -> tuple[Scale, ...]:
    """The scale at each of ``epochs`` (fixed epochs, shortest first): the rungs of a scale ladder; none:
    ``scale`` itself, the one rung."""
    if not epochs:
        return (scale,)
    return tuple(dataclasses.replace(scale, epochs=float(e), budget=None) for e in sorted(set(epochs)))


def cells_by_study(names: tuple[str, ...], keys: tuple[str, ...] | None, scale: Scale,
                   batch_sizes: tuple[int, ...] | None = None, **fair: bool) -> dict[str, tuple[str, ...] | None]:
    """``--cells``: study name -> the keys of ``keys`` that are its cells (None: every cell); a one-line
    ConfigError when a key names no cell of the studies."""
    from byol.errors import ConfigError

    if keys is None:
        return dict.fromkeys(names)
    known = {n: tuple(c.key for c in study_for(n, scale, batch_sizes, **fair).cells) for n in names}
    every = list(dict.fromkeys(k for ks in known.values() for k in ks))
    unknown = [k for k in keys if k not in every]
    if unknown:
        raise ConfigError(f"--cells: no cell {', '.join(map(repr, unknown))} in {' / '.join(names)}; "
                          f"its cells are {', '.join(every)}")
    return {n: tuple(k for k in keys if k in ks) for n, ks in known.items()}


def reproduce(
    name: str, scale: Scale, *, seeds: tuple[int, ...] = (0, 1), out_dir: str | Path = "reproduce",
    runs_dir: str | Path | None = None, batch_sizes: tuple[int, ...] | None = None, command: str = "",
    jobs: int = 1, train: bool = True, equal_time: bool = False, equal_steps: bool = False,
    epochs: tuple[float, ...] = (), cells: tuple[str, ...] | None = None, log: Callable[[str], None] = print,
) -> tuple[Path, Path | None] | None:
    """Run the missing cells of study ``name`` (records in ``out_dir/cells``; ``jobs`` cells at a time),
    then write its report and return its paths (``train=False``: the report of the cells recorded so far,
    training nothing).
    Cells whose method or recipe preset this version lacks are skipped with a line each. ``equal_time``: then
    each non-BYOL cell again, for the wall time BYOL's cell took at the same seed (baselines only).

    ``epochs``: a scale ladder, every cell at each of these lengths, the shortest for every cell and seed
    first (the equal wall time cells after all of them); the report's tables are at the longest, and its
    "Scale ladder" section follows each claim's margin over every length recorded in ``out_dir/cells``.
    ``cells``: train only the cells of these keys (the report shows whatever is recorded). A report already in
    ``out_dir`` that another command wrote is then kept (returns None): its command names the lengths and
    comparisons the report is about, which a run of a few cells would otherwise replace with its own."""
    out_dir = Path(out_dir)
    ladder = rungs(scale, epochs)
    scale = ladder[-1]
    fair = dict(equal_time=equal_time, equal_steps=equal_steps)
    keys = cells_by_study((name,), cells, scale, batch_sizes, **fair)[name]
    study = study_for(name, scale, batch_sizes, **fair)
    avail = available(study.cells, log)
    there = {c.key for c in avail}
    study = dataclasses.replace(study, cells=avail, claims=tuple(
        c for c in study.claims if all(k.split("@")[0] in there for k in c.cells)))
    trained = tuple(c for c in avail if keys is None or c.key in keys)
    cells_dir, runs = out_dir / "cells", _runs(runs_dir)
    run_ladder([(c, s, r) for r in ladder for c in trained for s in seeds], cells_dir, runs, jobs=jobs, train=train,
               log=log)
    found = rungs(scale, tuple(recorded_lengths(cells_dir) | {r.epochs for r in ladder})) if scale.epochs else ladder
    by_length = load_records([(c, s, r) for r in found for c in avail for s in seeds], cells_dir)
    if study.extra.get("equal_time"):
        timed = _equal_time_jobs(trained, ladder, by_length, log=log if train else None)  # --report-only: no lines
        run_ladder(timed, cells_dir, runs, jobs=jobs, train=train, log=log)
        timed = _equal_time_jobs(avail, found, by_length)
        for length, recs in load_records(timed, cells_dir).items():
            by_length.setdefault(length, {}).update(recs)
        study = dataclasses.replace(study, cells=(*study.cells, *dict.fromkeys(
            dataclasses.replace(c, budget=None) for c, _, _ in timed)))  # one row per cell (its budget is per seed)
    kept = report_command(out_dir / f"{study.stem}.md") if keys is not None and command else None
    if kept is not None and kept != command:
        log(f"{study.stem}.md kept: it is the report of `{kept}`; run that with --report-only to see these cells in it")
        return None
    return write_report(study, by_length.get(scale.epochs, {}), out_dir,
                        command=command or f"byol reproduce {name}", scale=scale.describe(), seeds=seeds,
                        ladder=by_length)


def _equal_time_jobs(cells: tuple[Cell, ...], ladder: tuple[Scale, ...],
                     by_length: dict[float | None, dict[str, list[dict]]],
                     log: Callable[[str], None] | None = None) -> list[tuple[Cell, int, Scale]]:
    """The equal wall time cells of ``cells`` at each rung, for the seconds of BYOL's record there. With
    ``log`` (the cells to train), a BYOL record timed on another machine gives no cells, and a line why."""
    out = []
    for r in ladder:
        byol = {int(rec["seed"]): rec for rec in by_length.get(r.epochs, {}).get("byol", [])}
        if log is not None:
            byol = {s: rec for s, rec in byol.items() if not _timed_elsewhere(rec, r, s, log)}
        out += [(c, s, r) for c, s in equal_time_cells(cells, byol)]
    return out


def _timed_elsewhere(record: dict, scale: Scale, seed: int, log: Callable[[str], None]) -> bool:
    import torch

    from byol.run.files import cpu_model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    why = timed_elsewhere(record, cpu_model(), gpu)
    if why:
        length = epochs_phrase(scale.epochs) if scale.epochs else f"budget {scale.budget}"
        log(f"{length}, seed {seed}: equal wall time cells not trained ({why}: its seconds are no budget here; "
            "run them on that machine, or delete BYOL's record to time it again here)")
    return why is not None


def run_studies_cells(
    names: tuple[str, ...], scale: Scale, *, seeds: tuple[int, ...] = (0, 1), out_dir: str | Path = "reproduce",
    runs_dir: str | Path | None = None, batch_sizes: tuple[int, ...] | None = None, jobs: int = 1,
    equal_time: bool = False, equal_steps: bool = False, epochs: tuple[float, ...] = (),
    cells: tuple[str, ...] | None = None, log: Callable[[str], None] = print,
) -> None:
    """Run the missing cells of several studies as one pool (a cell two studies share runs once), so that
    ``jobs`` processes stay busy across study boundaries (and, with ``epochs``, the shortest rung of every
    study first); the reports are written by :func:`reproduce`."""
    fair = dict(equal_time=equal_time, equal_steps=equal_steps)
    ladder = rungs(scale, epochs)
    keys = cells_by_study(names, cells, ladder[-1], batch_sizes, **fair)
    todo = [(c, s, r) for r in ladder for n in names
            for c in available(study_for(n, ladder[-1], batch_sizes, **fair).cells, lambda _: None)
            if keys[n] is None or c.key in keys[n] for s in seeds]
    run_jobs(todo, Path(out_dir) / "cells", _runs(runs_dir), jobs=jobs, log=log)


def recorded_lengths(cells_dir: Path) -> set[float]:
    """The fixed lengths (epochs) of the records in ``cells_dir``: the rungs a report finds records at."""
    out = set()
    for path in cells_dir.glob("*.json"):
        length = (json.loads(path.read_text()).get("scale") or {}).get("epochs")
        if length:
            out.add(float(length))
    return out


def _runs(runs_dir: str | Path | None) -> Path:
    return Path(runs_dir) if runs_dir else Path("runs") / "reproduce"

"""``byol reproduce NAME``: flags -> :func:`byol.reproduce.reproduce`."""

from __future__ import annotations

import argparse
import shlex
import sys


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    from byol.reproduce.studies import STUDY_NAMES

    p = sub.add_parser("reproduce", help="the paper's comparisons and ablations, cell by cell, resumable",
                       description="Train and evaluate every cell of a study (skipping cells already recorded in "
                                   "OUT/cells), then write OUT/NAME.md and OUT/NAME.png.")
    p.add_argument("name", choices=(*STUDY_NAMES, "all"), help="which study")
    p.add_argument("--config", default="cifar10", help="preset every cell starts from (default cifar10)")
    p.add_argument("--data", default=None, help="data set name or labeled image folder / .zip with a test split")
    p.add_argument("--budget", default="2m", help="wall-clock budget per cell (default 2m)")
    p.add_argument("--epochs", type=float, nargs="+", default=None,
                   help="fixed epochs per cell instead of a budget; several: a scale ladder, every cell at each "
                        "length, the shortest first (the report follows each claim's margin over the lengths)")
    p.add_argument("--cells", nargs="+", default=None, metavar="KEY",
                   help="train only these cells (keys as in the study, e.g. tau-0 tau-1 tau-cosine random-init); "
                        "the report shows every cell recorded; a report another command wrote is kept")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds per cell (default 0 1)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="batch ladder for batch-size (default: the preset's batch, 1/4 and 1/16 of it)")
    p.add_argument("--eval-train", type=int, default=10000,
                   help="labeled train images the kNN / linear probes fit on (0: all; default 10000)")
    p.add_argument("--out", default="reproduce", help="results folder: cells/*.json, NAME.md, NAME.png")
    p.add_argument("--runs-dir", default=None, help="where the cells' run directories go (default runs/reproduce)")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells trained at a time, each in its own process with cpus/jobs threads (default 1)")
    p.add_argument("--report-only", action="store_true",
                   help="write the report of the cells recorded so far in OUT/cells; train nothing")
    p.add_argument("--equal-time", action="store_true",
                   help="baselines: also train each other method for the wall time BYOL's cell took at the same seed "
                        "(needs --epochs); the report shows equal steps and equal wall time")
    p.add_argument("--equal-steps", action="store_true",
                   help="batch-size: train each batch for the epochs x batch / the largest batch, so every cell "
                        "takes the same steps (default: equal epochs, as the paper; needs --epochs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every cell (repeatable)")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(a: argparse.Namespace) -> int:
    from byol.errors import ConfigError
    from byol.reproduce import STUDY_NAMES, Scale, cells_by_study, reproduce, run_studies_cells

    epochs = tuple(sorted(set(a.epochs or ())))
    if any(e <= 0 for e in epochs):
        raise ConfigError(f"--epochs must be positive, got {' '.join(f'{e:g}' for e in a.epochs)}")
    if a.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {a.jobs}")
    if any(s < 0 for s in a.seeds):
        raise ConfigError(f"--seeds must be non-negative, got {a.seeds}")
    for flag, on, study in (("--equal-time", a.equal_time, "baselines"), ("--equal-steps", a.equal_steps, "batch-size")):
        if on and a.name not in (study, "all"):
            raise ConfigError(f"{flag} applies to the {study} study, not {a.name}")
        if on and a.epochs is None:
            raise ConfigError(f"{flag} needs --epochs (with a --budget every cell already trains for the same time)")
    scale = Scale(preset=a.config, data=a.data, budget=None if epochs else a.budget, epochs=max(epochs, default=None),
                  eval_train=a.eval_train or None, overrides=tuple(a.overrides))
    args = [x for x in sys.argv[1:] if x != "--report-only"]  # the report names the command that trains
    command = "byol " + " ".join(shlex.quote(x) for x in args) if args[:1] == ["reproduce"] else ""
    names = STUDY_NAMES if a.name == "all" else (a.name,)
    common = dict(seeds=tuple(a.seeds), out_dir=a.out, runs_dir=a.runs_dir,
                  batch_sizes=tuple(a.batch_sizes) if a.batch_sizes else None, jobs=a.jobs, epochs=epochs)
    fair = dict(equal_time=a.equal_time, equal_steps=a.equal_steps)
    cells = cells_by_study(names, tuple(a.cells) if a.cells else None, scale, common["batch_sizes"], **fair)
    if a.report_only:
        common["train"] = False
    elif len(names) > 1 and a.jobs > 1:  # one pool over all studies: no idle process between them
        run_studies_cells(names, scale, **common, **fair, cells=tuple(a.cells) if a.cells else None)
    for name in names:
        written = reproduce(name, scale, **common, **fair, cells=cells[name],
                            command=command.replace(" all", f" {name}") if a.name == "all" else command)
        if written is not None:
            md, png = written
            print(f"{name}: wrote {md}" + (f" and {png}" if png else ""), flush=True)
    return 0

"""Fair method comparisons: each method on its own recipe, at equal steps and at equal wall time.

A cell with a ``recipe`` (a preset name, e.g. ``moco-cifar10``) keeps the study's scale preset for what every
cell shares (data, model, train) and takes the recipe's ``method`` and ``optim`` sections (and ``views`` when
the method's paper prescribes its own, e.g. MoCo v2's one distribution for both views). The scale's batch is
kept, so every cell takes the same number of optimizer steps; the lr follows it by the linear scaling rule
(``base_lr`` x B/256) of the recipe's ``base_lr``. Before recipes, every method ran on BYOL's optimizer with its
published ImageNet loss settings (e.g. MoCo's 65,536-key queue at 1,170 steps).

Equal steps is not equal compute: a method with a key encoder and a queue takes longer per step. An equal
wall time cell trains a method for the seconds BYOL's cell of the same seed took (``train.budget``, the epochs
an upper bound), so a report can show both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from byol.config import find_preset, load_yaml
from byol.errors import ConfigError
from byol.reproduce.studies import Cell

#: an equal wall time cell may train at most this many times the scale's epochs (the budget decides)
EQUAL_TIME_MAX_EPOCHS = 10.0
#: the series of the equal wall time cells in a study's report
EQUAL_TIME = "equal wall time"


def recipe_layer(scale_layer: dict[str, Any], cell: Cell, batch_size: int) -> dict[str, Any]:
    """The scale preset's layer with ``cell.recipe``'s method and optim sections (and views with
    ``recipe_views``) in place of its own; the optim's batch is ``batch_size`` (the scale's)."""
    recipe = load_yaml(find_preset(str(cell.recipe)))
    named = (recipe.get("method") or {}).get("name")
    if named != cell.method:
        raise ConfigError(f"recipe {cell.recipe!r} trains method {named!r}, not the cell's {cell.method!r}")
    out = {k: v for k, v in scale_layer.items() if k not in ("method", "optim")}
    out["method"] = dict(recipe["method"])
    out["optim"] = {**(recipe.get("optim") or {}), "batch_size": batch_size}
    if cell.recipe_views:
        out["views"] = dict(recipe.get("views") or {})
    return out


def unavailable(cell: Cell) -> str | None:
    """Why ``cell`` cannot run in this version (its method or recipe preset is not there), or None."""
    from byol.methods import method_names

    if cell.method != "random-init" and cell.method not in method_names():
        return f"method {cell.method!r} is not in this version"
    if cell.recipe is not None:
        try:
            find_preset(cell.recipe)
        except ConfigError:
            return f"preset {cell.recipe!r} is not in this version"
    return None


def available(cells: tuple[Cell, ...], log=print) -> tuple[Cell, ...]:
    """The cells that can run here; one line for each skipped one."""
    out = []
    for cell in cells:
        why = unavailable(cell)
        if why:
            log(f"{cell.label}: skipped ({why})")
        else:
            out.append(cell)
    return tuple(out)


def equal_time_cells(cells: tuple[Cell, ...], byol_records: dict[int, dict[str, Any]]) -> list[tuple[Cell, int]]:
    """For each seed with a BYOL record and each trained non-BYOL cell: the cell trained for the seconds BYOL's
    cell took at that seed (``pretrain_seconds``, the clock ``train.budget`` reads), rounded to 0.1 s."""
    out = []
    for seed, record in sorted(byol_records.items()):
        budget = f"{float(record['pretrain_seconds']):.1f}s"
        for c in cells:
            if c.method in ("byol", "random-init") or c.budget:
                continue
            out.append((Cell(f"{c.key}@time", f"{c.label}, BYOL's wall time", c.method, c.overrides, c.paper,
                             group=EQUAL_TIME, recipe=c.recipe, recipe_views=c.recipe_views, budget=budget), seed))
    return out


def timed_elsewhere(record: dict[str, Any], cpu: str, gpu: str | None) -> str | None:
    """Why the seconds of BYOL's ``record`` are no wall time budget on this machine (None: they are one): it
    ran on another CPU model or GPU, where the same seconds buy another number of steps (and on a CPU maybe
    another precision: ``train.amp=auto`` is bf16 autocast with AMX, fp32 without)."""
    p = record.get("provenance") or {}
    if p.get("cuda"):
        return None if p["cuda"] == gpu else f"BYOL's record ran on {p['cuda']}, this machine has {gpu or 'no GPU'}"
    there = p.get("cpu")
    return None if there == cpu else f"BYOL's record ran on {there or 'an unrecorded CPU'}, this machine is {cpu}"


def length_overrides(cell: Cell, epochs: float | None, budget: str | None) -> list[str]:
    """The ``train.epochs`` / ``train.budget`` overrides of a cell at a scale of ``epochs`` or ``budget``."""
    if cell.budget:
        if not epochs:
            raise ConfigError("equal wall time cells need a scale of fixed epochs (--epochs)")
        return [f"train.epochs={epochs * EQUAL_TIME_MAX_EPOCHS:g}", f"train.budget={cell.budget}"]
    if epochs:
        return [f"train.epochs={epochs * cell.epochs_scale}", "train.budget=null"]
    return [f"train.budget={budget}"] if budget else []


def scale_batch(preset: str | Path, overrides: tuple[str, ...]) -> int:
    """The batch of the scale preset (with the user's overrides): what every recipe cell trains with."""
    from byol.train.config import build_config

    return build_config(files=[find_preset(preset)], overrides=[*overrides, "method.name=byol"]).optim.batch_size

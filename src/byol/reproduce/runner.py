"""Run a study's cells, one JSON record per finished (cell, seed), skipping records already there.

A record's file name is a hash of everything that determines its result (preset, data, budget or epochs,
evaluation size, the cell's overrides, seed), not of the study: a cell shared by two studies (BYOL at the
preset's settings is the reference of several) is trained once. Records are small and meant to be
committed, so a sweep killed or split over sessions and machines resumes where it stopped.

Evaluation follows the paper's protocols at CPU scale: kNN (k=20, cosine, temperature 0.07) and the L-BFGS
linear probe on frozen features, fitted on (a seeded subset of) the labeled train split, its l2 chosen on a
validation split carved from it, and scored on the test split. Nothing is selected on test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from byol.atomic import atomic_write
from byol.eval.floor import VARIANTS, recalibrate_bn
from byol.config import config_layers, find_preset, to_dict
from byol.train.config import PretrainConfig, config_from_layers
from byol.data import ImageSet, load_images, normalization
from byol.data.sizes import Sizes
from byol.eval.compare import evaluate_encoders
from byol.models.factory import build_encoder
from byol.train.monitor import is_collapsed
from byol.reports.plots import read_metrics
from byol.reproduce.recipes import length_overrides, recipe_layer, scale_batch
from byol.reproduce.studies import Cell
from byol.runtime.device import resolve_device

RECORD_VERSION = 1
KNN_K = 20


@dataclass(frozen=True)
class Scale:
    """What every cell of a sweep shares: the preset, data, training length and evaluation size."""

    preset: str
    data: str | None = None  #: overrides the preset's data.source (e.g. an image folder or .zip)
    budget: str | None = "2m"  #: wall-clock budget per cell (None: the preset's epochs, or ``epochs``)
    epochs: float | None = None  #: fixed epochs per cell instead of a budget
    eval_train: int | None = 10000  #: labeled train images the probes fit on (None: all)
    overrides: tuple[str, ...] = ()  #: user ``--set`` overrides applied to every cell

    def describe(self) -> dict[str, Any]:
        return {"preset": self.preset, "data": self.data, "budget": self.budget, "epochs": self.epochs,
                "eval_train": self.eval_train, "overrides": list(self.overrides)}


#: Config keys that do not change a result (where files go, how progress is shown, checkpoint cadence...).
_NOT_RESULT = frozenset({"data.cache_dir", "train.progress", "train.threads", "train.ckpt_every", "train.ckpt_minutes",
                         "train.keep_checkpoints", "train.log_every", "train.update_stats", "train.verdict", "description",
                         "data.workers"})


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


#: The method section as the one class of RECORD_VERSION 1 held it, every method's keys together: its keys
#: and defaults. A cell's hash reads the method's values in this layout (:func:`_v1_method`), so that the
#: records written then (docs/results/cells) are still found now that each method has its own section.
_V1_METHOD: dict[str, Any] = {
    "name": "byol", "proj_hidden": 4096, "proj_dim": 256, "pred_hidden": 4096, "tau_base": 0.996, "target_init": "random",
    "use_predictor": True, "tau_schedule": "cosine", "target": "ema", "negative_weight": 0.0, "temperature": None,
    "queue_size": 65536, "momentum": 0.999, "split_bn_groups": 8,
}
#: Keys added to a section that had records in that layout (BYOL's DirectPred option), with their defaults:
#: at these values they are left out of a cell's hash, so the records written before keep their names
_ADDED_METHOD_DEFAULTS: dict[str, Any] = {"predictor": "mlp", "directpred_rho": 0.3, "directpred_eps": 0.1,
                                          "directpred_every": 1}
#: MoCo's key-encoder momentum was ``momentum`` (constant) in that layout; it is MoCo's ``tau_base`` now
_V1_RENAMED = {("moco", "tau_base"): "momentum", ("moco", "tau_schedule"): "momentum_schedule"}


def _v1_value(key: str, value: Any) -> Any:
    """``value`` as the v1 class coerced it (numbers of float keys as floats, whole numbers of int keys as ints)."""
    default = _V1_METHOD.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(default, float) or (default is None and key == "temperature"):
        return float(value)
    return int(value) if isinstance(default, int) and float(value).is_integer() else value


def _v1_method(method: Any, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The method section in the v1 layout: every method key any layer set (v1 kept them all, e.g. a BYOL
    preset's ``tau_base`` in a SimCLR cell), the chosen method's own values on top, renamed as v1 named them
    (MoCo's constant ``tau_base`` was ``momentum``)."""
    out = dict(_V1_METHOD)
    for layer in layers:
        out.update((k, _v1_value(k, v)) for k, v in (layer.get("method") or {}).items() if k in _V1_METHOD)
    for k, v in to_dict(method).items():
        key = _V1_RENAMED.get((method.name, k), k)
        if not (key == "momentum_schedule" and v == "constant"):  # v1's MoCo momentum was constant
            out[key] = v
    return out


def cell_id(cell: Cell, scale: Scale, seed: int) -> str:
    """``<hash>-s<seed>``. The hash covers the cell's fully resolved config where it differs from the
    library's defaults (so an edited preset is a new cell, never a stale record, while a new config key
    with a default does not orphan the records), the training length and the evaluation size. A change of
    a default that changes results must bump ``RECORD_VERSION``. The method's keys are read in the layout
    of RECORD_VERSION 1 (:func:`_v1_method`)."""
    layers = _cell_layers(cell, scale, seed)
    cfg = config_from_layers(layers)
    defaults = _flat({**to_dict(PretrainConfig()), "method": {**_V1_METHOD, **_ADDED_METHOD_DEFAULTS}})
    resolved = {k: v for k, v in _flat({**to_dict(cfg), "method": _v1_method(cfg.method, layers)}).items()
                if k not in _NOT_RESULT and (k not in defaults or v != defaults[k])}
    ident: dict[str, Any] = {"v": RECORD_VERSION, "config": resolved, "random_init": cell.method == "random-init",
                             "eval_train": scale.eval_train}
    if cell.method == "random-init":  # the fair floor (byol.eval.floor): a new result, so a new record
        ident["floor"] = "stronger of initial and recalibrated BN statistics"
    key = json.dumps(ident, sort_keys=True, default=str)
    return f"{hashlib.sha1(key.encode()).hexdigest()[:12]}-s{seed}"


def _cell_layers(cell: Cell, scale: Scale, seed: int) -> list[dict[str, Any]]:
    """The scale preset (with the cell's recipe sections in place of its own, :mod:`byol.reproduce.recipes`),
    then the user's overrides, the cell's, the seed and the training length."""
    length = length_overrides(cell, scale.epochs, scale.budget)
    extra = {"data": {"source": scale.data}} if scale.data else None
    overrides = [*scale.overrides, *cell.all_overrides(), f"train.seed={seed}", "train.knn_every=0",
                 "train.verdict=false", *length]  # the cells are evaluated here, on the test split
    layers = config_layers([find_preset(scale.preset)], overrides, extra)
    if cell.recipe is not None:
        layers[0] = recipe_layer(layers[0], cell, scale_batch(scale.preset, scale.overrides))
    return layers


def cell_config(cell: Cell, scale: Scale, seed: int) -> PretrainConfig:
    return config_from_layers(_cell_layers(cell, scale, seed))


def _eval_split(train: ImageSet, n: int | None) -> torch.Tensor:
    """The labeled train images the probes use: a seeded subset, the same for every cell."""
    if n is None or n >= len(train):
        return torch.arange(len(train))
    return torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n].sort().values


def evaluate(encoder: torch.nn.Module, train: ImageSet, test: ImageSet, *, size: int, mean, std,
             device: torch.device, eval_train: int | None) -> dict[str, float]:
    """kNN and linear top-1 (%) on the test split, fitted on (a seeded subset of) train only."""
    res = evaluate_encoders({"encoder": encoder}, train.subset(_eval_split(train, eval_train)), test, size=size,
                            mean=mean, std=std, device=device, raw_pixels=False, k=KNN_K)
    return {"knn": res["knn"]["encoder"], "linear": res["linear"]["encoder"]}


def _collapse(run_dir: Path) -> dict[str, Any]:
    """The collapse monitor's last reading of a run (projections' spread, codes' entropy)."""
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "z_std" in r]
    if not rows:
        return {"collapsed": False}
    last = rows[-1]
    out = {"collapsed": bool(is_collapsed(last)), "z_std": last["z_std"], "z_std_ref": last["z_std_ref"],
           "eff_rank": last.get("eff_rank"), "final_loss": last.get("loss")}
    return out | ({"code_entropy": last["code_entropy"]} if "code_entropy" in last else {})


def _load_test(cfg: PretrainConfig) -> ImageSet:
    """The labeled split the cells are scored on: ``test``, else ``val`` (as every ``byol eval`` command takes
    a folder's ``val/``); a one-line DataError when there is neither, or it has no labels."""
    from byol.errors import DataError

    d = cfg.data
    kw = dict(image_size=d.image_size, data_dir=d.data_dir, cache_dir=d.cache_dir, download=d.download,
              progress=False)
    for split in ("test", "val"):
        try:
            images = load_images(d.source, split, **kw)
        except DataError:
            continue
        if images.labels is None or len(images) == 0:
            break
        return images
    raise DataError(f"{d.source}: reproductions score each cell on a labeled evaluation split (test/ or val/ with "
                    "one folder per class) and this data has none: add one, or use a named data set")


def check_eval_split(scale: Scale) -> None:
    """Load the evaluation split of ``scale``'s data before any cell trains (a missing split used to end a
    sweep after its first cell's minutes of training)."""
    cfg = config_from_layers(_cell_layers(Cell("check", "check", "random-init", ()), scale, 0))
    _load_test(cfg)


def _train(cfg: PretrainConfig, run_dir: Path) -> dict[str, Any]:
    """Pretrain a cell, continuing its run where a killed sweep left it. A stopped run (Ctrl-C, SIGTERM)
    records nothing: the interrupt propagates, and the next sweep resumes the cell."""
    from byol.train.pretrain import run_pretrain

    summary = run_pretrain(cfg, run_dir, resume=(run_dir / "checkpoints" / "last.pt").is_file())
    if summary.get("finished"):  # trained, but killed before its record was written: train it again
        shutil.rmtree(run_dir)
        summary = run_pretrain(cfg, run_dir)
    if summary["stop_reason"].startswith("interrupted"):
        raise KeyboardInterrupt(f"{run_dir}: {summary['stop_reason']}")
    return summary


def run_cell(cell: Cell, scale: Scale, seed: int, runs_dir: Path) -> dict[str, Any]:
    """Train (unless the cell is the random-init floor) and evaluate one cell with one seed."""
    from byol.train.pretrain import load_train_data

    cfg = cell_config(cell, scale, seed)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"method": cell.method, "overrides": list(cell.all_overrides()), "seed": seed}
    if cell.recipe is not None:  # the resolved config is provenance.config
        record.update(recipe=cell.recipe, recipe_views=cell.recipe_views)
    if cell.budget:
        record["budget"] = cell.budget
    if cell.method == "random-init":
        device = resolve_device(cfg.train.device)
        train = load_train_data(cfg.data, seed=seed, progress=False)
        mean, std = normalization(cfg.data.source, train.images, cfg.data.mean, cfg.data.std)
        size = Sizes.resolve(decode=cfg.data.image_size, view=cfg.data.view_size, images=train.image_size).view
        torch.manual_seed(seed + 1)
        encoder = build_encoder(cfg.model, train.num_channels).to(device)
        record.update(epochs=0.0, steps=0, pretrain_seconds=0.0, collapsed=False)
        tuned = recalibrate_bn(encoder, train.images, size=size, mean=mean, std=std, device=device, seed=seed)
    else:
        run_dir = runs_dir / cell_id(cell, scale, seed)
        summary = _train(cfg, run_dir)
        train, mean, std, size, device = (summary[k] for k in ("train", "mean", "std", "size", "device"))
        encoder = summary["method"].encoder
        record.update(epochs=summary["epochs"], steps=summary["steps"], pretrain_seconds=summary["seconds"],
                      batch_size=cfg.optim.batch_size, precision=summary["precision"],
                      stop_reason=summary["stop_reason"], run_dir=str(run_dir), **_collapse(run_dir))
    if train.labels is None:
        from byol.errors import DataError

        raise DataError(f"{cfg.data.source}: reproductions need labels to evaluate (class folders)")
    test = _load_test(cfg)
    t1 = time.perf_counter()
    kw = dict(size=size, mean=mean, std=std, device=device, eval_train=scale.eval_train)
    record.update(evaluate(encoder, train, test, **kw))
    if cell.method == "random-init":  # the fair floor: the stronger variant per metric, both recorded
        variants = {VARIANTS[0]: dict(record), VARIANTS[1]: evaluate(tuned, train, test, **kw)}
        record["floor_variants"] = {v: {m: r[m] for m in ("knn", "linear")} for v, r in variants.items()}
        record.update({m: max(r[m] for r in variants.values()) for m in ("knn", "linear")})
    record.update(eval_seconds=time.perf_counter() - t1, wall_seconds=time.perf_counter() - t0,
                  num_classes=int(train.num_classes or int(train.labels.max()) + 1), backbone=cfg.model.backbone,
                  data=cfg.data.source, host=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                  time=time.strftime("%Y-%m-%dT%H:%M:%S"), provenance=provenance(cfg, device))
    return record


def provenance(cfg: PretrainConfig, device: torch.device) -> dict[str, Any]:
    """Which code made a record: git commit (and whether the package had uncommitted changes), byol / torch /
    torchvision versions, CPU model, threads, the command, and the cell's fully resolved config."""
    from byol.run.files import env_info

    return {**env_info(device), "config": to_dict(cfg)}


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomically (:func:`byol.atomic.atomic_write`): a killed sweep never leaves a half-written record."""
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True))


def record_cell(cell: Cell, scale: Scale, seed: int, cells_dir: Path, runs_dir: Path) -> dict[str, Any]:
    """Run one (cell, seed) and write its record (atomically); returns the record."""
    record = run_cell(cell, scale, seed, runs_dir)
    record.update(label=cell.label, scale=scale.describe(), version=RECORD_VERSION)
    write_record(cells_dir / f"{cell_id(cell, scale, seed)}.json", record)
    return record


def _record_in_worker(cell: Cell, scale: Scale, seed: int, cells_dir: Path, runs_dir: Path, threads: int,
                      tag: str) -> dict[str, Any]:
    """:func:`record_cell` in a pool process: its share of the cores, no progress bar (bars of several
    processes would interleave)."""
    torch.set_num_threads(threads)
    print(f"{tag} {cell.label}, seed {seed}: running", flush=True)
    scale = dataclasses.replace(scale, overrides=(*scale.overrides, "train.progress=false"))
    return record_cell(cell, scale, seed, cells_dir, runs_dir)


def _done_line(tag: str, cell: Cell, seed: int, record: dict[str, Any], name: str) -> str:
    return (f"{tag} {cell.label}, seed {seed}: kNN {record['knn']:.2f}, linear {record['linear']:.2f}, "
            f"{record['epochs']:.1f} epochs{' (collapsed)' if record.get('collapsed') else ''} -> {name}")


Job = tuple[Cell, int, Scale]  #: a (cell, seed) at one length (a rung of a scale ladder)


def _record_path(cells_dir: Path, job: Job) -> Path:
    cell, seed, scale = job
    return cells_dir / f"{cell_id(cell, scale, seed)}.json"


def run_jobs(todo: list[Job], cells_dir: Path, runs_dir: Path, *, jobs: int = 1,
             log: Callable[[str], None] = print) -> None:
    """Run and record the jobs of ``todo`` that have no record yet, ``jobs`` at a time, in the order given (a
    ladder lists its shortest length first, so a sweep stopped early leaves its short rungs complete); with
    several lengths the log's tags name each job's.

    With ``jobs`` > 1 each cell runs in its own process with ``cpus // jobs`` threads (on 2 cores about the
    same throughput as one cell at a time for the small CNN, docs/guide.md). Records are the same either way
    (tested): a cell's id and result do not depend on where it ran. A Ctrl-C reaches every running cell,
    which saves and resumes on the next sweep; no queued cell starts after it
    (:func:`byol.reproduce.pool.run_bounded`)."""
    # one job per record: two cells of one config (a study's variants share their reference cell) train once
    first: dict[Path, Job] = {}
    for j in todo:
        first.setdefault(_record_path(cells_dir, j), j)
    todo = [j for path, j in first.items() if not path.is_file()]
    if todo:
        check_eval_split(todo[0][2])  # the lengths share the data
    several = len({j[2] for j in todo}) > 1
    tags = {j: f"[{i}/{len(todo)}" + (f", {j[2].epochs:g} epochs]" if several else "]") for i, j in enumerate(todo, 1)}
    if jobs <= 1:
        for (cell, seed, scale), tag in tags.items():
            log(f"{tag} {cell.label}, seed {seed}: running")
            record = record_cell(cell, scale, seed, cells_dir, runs_dir)
            log(_done_line(tag, cell, seed, record, f"{cell_id(cell, scale, seed)}.json"))
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    from byol.reproduce.pool import run_bounded
    from byol.run.files import code_changed

    threads = max(1, (os.cpu_count() or 1) // jobs)

    def done(job: Job, record: dict[str, Any]) -> None:
        cell, seed, scale = job
        log(_done_line(tags[job], cell, seed, record, f"{cell_id(cell, scale, seed)}.json"))
        if (changed := code_changed(record.get("provenance") or {})) is not None:
            log(changed)

    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        run_bounded(pool, ((j, _record_in_worker, (j[0], j[2], j[1], cells_dir, runs_dir, threads, tags[j]))
                           for j in todo), jobs, done)


def run_ladder(
    todo: list[Job], cells_dir: Path, runs_dir: Path, *, jobs: int = 1, train: bool = True,
    log: Callable[[str], None] = print,
) -> dict[float | None, dict[str, list[dict[str, Any]]]]:
    """Every record of ``todo``, running the missing ones (:func:`run_jobs`; ``train=False``: only those already
    recorded, for a report of a sweep in progress), one line for each found or missing. Returns length (the
    scale's epochs) -> cell key -> records. A job's cell may differ by seed (equal wall time cells train for
    the seconds of BYOL's cell at their seed)."""
    several = len({j[2] for j in todo}) > 1
    for job in todo:
        cell, seed, scale = job
        at = f", {scale.epochs:g} epochs" if several else ""
        path = _record_path(cells_dir, job)
        if path.is_file():
            log(f"{cell.label}, seed {seed}{at}: done before ({path.name}), skipped")
        elif not train:
            log(f"{cell.label}, seed {seed}{at}: not run yet")
    if train:
        run_jobs(todo, cells_dir, runs_dir, jobs=jobs, log=log)
    return load_records(todo, cells_dir)


def load_records(todo: list[Job], cells_dir: Path) -> dict[float | None, dict[str, list[dict[str, Any]]]]:
    """The records of ``todo`` found in ``cells_dir``: length -> cell key -> records."""
    out: dict[float | None, dict[str, list[dict[str, Any]]]] = {}
    for job in dict.fromkeys(todo):
        path = _record_path(cells_dir, job)
        if path.is_file():
            out.setdefault(job[2].epochs, {}).setdefault(job[0].key, []).append(json.loads(path.read_text()))
    return out


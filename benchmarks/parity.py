"""Parity with an implementation nobody here wrote: our BYOL and SimCLR against lightly's pieces, all else equal.

``lightly-byol`` and ``lightly-simclr`` are methods registered here (never in src/byol: the package does not
depend on lightly) from lightly's own pieces: BYOL's ``BYOLProjectionHead``, ``BYOLPredictionHead``,
``NegativeCosineSimilarity``, ``update_momentum``, ``deactivate_requires_grad`` and ``cosine_schedule`` for
tau; SimCLR's ``SimCLRProjectionHead`` and ``NTXentLoss``. Each cell is trained by our own composition root
(``byol.train.pretrain.run_pretrain``, through ``byol.reproduce.runner.run_cell``), so backbone, views, data,
optimizer, lr schedule and seeds are ours for both implementations, at fixed epochs (equal steps), and scored
as ``byol reproduce`` scores a cell (kNN k=20 and the L-BFGS linear probe on the test split, else val, fitted on
a seeded subset of train). One JSON line per finished (impl, method, seed) is appended to ``--out``; a line
already there is skipped, and a run killed mid-training resumes from its checkpoint.

Glue that is neither ours nor lightly's "pieces" follows ours, so that a gap points at the pieces: BYOL runs
one forward pass per view and sums the two directions; SimCLR runs both views in one pass. Where lightly's
own examples differ, the difference is named in the code (``LightlyBYOL``, ``LightlySimCLR``).

Run in the peers environment (``bash benchmarks/setup_peers.sh``), e.g. 10 epochs on a zip of labeled photos
(``train/<class>/`` and ``test/<class>/``) at the folder preset's 32 px:

    nice -n 19 .venv-peers/bin/python benchmarks/parity.py --data PHOTOS.zip --config folder --epochs 10 \\
        --seeds 0 1 --methods byol simclr --threads 2 --out benchmarks/parity.jsonl
    nice -n 19 .venv-peers/bin/python benchmarks/parity.py --check-pieces   # the pieces at initialisation
    .venv/bin/python benchmarks/parity.py --table --out benchmarks/parity.jsonl  # the table so far (no lightly)

"Within" in the table: ``|mean(ours) - mean(lightly)| <= 2 s``, ``s`` the seeds' pooled standard deviation.
Two implementations equal in distribution still land outside it by chance about 18% of the time with 2 seeds
per side, 7% with 3, 3% with 4 (simulated with normal noise): an "outside" at 2 seeds asks for more seeds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import math
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from byol.config import MethodConfig, find_preset, to_dict
from byol.config.checks import ranged
from byol.errors import ByolError, ConfigError
from byol.methods.common import decay_field, temperature, temperature_field
from byol.methods.registry import BackboneFactory, register
from byol.methods.simclr import PUBLISHED_TEMPERATURE
from byol.reproduce.runner import Scale, cell_config, cell_id, run_cell
from byol.reproduce.studies import Cell
from byol.train.config import build_config

IMPLS = ("ours", "lightly")
#: our method -> lightly's twin registered below
TWINS = {"byol": "lightly-byol", "simclr": "lightly-simclr"}
#: where SimCLR's temperature comes from: our SimCLR preset (0.5, SimCLR's CIFAR-10 value), whatever --config is
SIMCLR_PRESET = "simclr-cifar10"


@dataclass
class LightlyBYOLConfig(MethodConfig):
    """``method:`` of ``lightly-byol``: what lightly's BYOL pieces take (heads, predictor width, tau_base)."""

    #: our BYOL section's keys whose value lightly's construction fixes (a copied target, a predictor, the
    #: EMA target, tau's cosine ramp to 1, no negatives): a parity run of ours with another value is refused
    IMPLIED: ClassVar[dict[str, Any]] = {"target_init": "copy", "use_predictor": True, "target": "ema",
                                         "tau_schedule": "cosine", "negative_weight": 0.0}
    name: str = "lightly-byol"
    pred_hidden: int = ranged(4096)
    tau_base: float = decay_field(0.996)


@register("lightly-byol", config=LightlyBYOLConfig)
class LightlyBYOL(nn.Module):
    """BYOL from lightly's pieces over our backbone.

    - Heads: ``BYOLProjectionHead`` / ``BYOLPredictionHead`` are ``Linear(no bias) -> BN -> ReLU -> Linear(bias)``;
      ours (``byol.models.heads.MLP``) are ``Linear(bias) -> BN -> ReLU -> Linear(no bias)``. The first bias is
      cancelled by the BN after it (same function), the last one is a real difference: lightly's outputs
      have a learned offset, ours none (the paper's code has none either).
    - Loss: lightly's ``NegativeCosineSimilarity`` is ``-mean cos``; BYOL's is ``mean(2 - 2 cos)`` per direction,
      the two directions summed (``byol.losses.byol_loss``). Equalised as ``4 + 2 (neg(p1, t2) + neg(p2, t1))``:
      the same value and gradient as ours (``--check-pieces`` measures it). lightly's examples use
      ``0.5 (neg + neg)``, a quarter of that gradient: with SGD and weight decay that is not an lr change alone.
    - Target: a deep copy (lightly's way; ours with ``target_init: copy``) frozen by ``deactivate_requires_grad``,
      moved after each optimizer step by ``update_momentum`` at ``cosine_schedule(step, K, tau_base, 1)``. Lightly's
      examples update it at the start of the next step (the same order) and read tau per epoch or per step;
      its schedule reaches 1 at step K - 1 where ours (``target_tau``) approaches 1 at K.
    """

    def __init__(self, backbone_factory: BackboneFactory, config: LightlyBYOLConfig | None = None) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        c = self.config = config or LightlyBYOLConfig()
        self.encoder = backbone_factory()
        self.projector = BYOLProjectionHead(int(self.encoder.feature_dim), c.proj_hidden, c.proj_dim)
        self.predictor = BYOLPredictionHead(c.proj_dim, c.pred_hidden, c.proj_dim)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.target_encoder)
        deactivate_requires_grad(self.target_projector)
        self.criterion = NegativeCosineSimilarity()

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector, self.predictor]

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        z1 = self.projector(self.encoder(view1))
        z2 = self.projector(self.encoder(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1 = self.target_projector(self.target_encoder(view1))
            t2 = self.target_projector(self.target_encoder(view2))
        loss = 4.0 + 2.0 * (self.criterion(p1, t2) + self.criterion(p2, t1))
        return {"loss": loss, "proj": z1.detach()}

    @torch.no_grad()
    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        tau = cosine_schedule(step, total_steps, self.config.tau_base, 1.0)
        update_momentum(self.encoder, self.target_encoder, m=tau)
        update_momentum(self.projector, self.target_projector, m=tau)
        return {"tau": tau}


@dataclass
class LightlySimCLRConfig(MethodConfig):
    """``method:`` of ``lightly-simclr``: the heads and NT-Xent's temperature (None: SimCLR's published 0.1)."""

    IMPLIED: ClassVar[dict[str, Any]] = {}
    name: str = "lightly-simclr"
    temperature: float | None = temperature_field()


@register("lightly-simclr", config=LightlySimCLRConfig)
class LightlySimCLR(nn.Module):
    """SimCLR from lightly's pieces over our backbone: ``SimCLRProjectionHead`` and ``NTXentLoss``.

    - Head: ``Linear(no bias) -> BN -> ReLU -> Linear(no bias) -> BN``: a batch-normalised *output*, which ours
      (``Linear(bias) -> BN -> ReLU -> Linear(no bias)``) does not have.
    - Both views in one forward pass (BN over the 2N views), as ours; lightly's SimCLR example runs one pass
      per view. ``gather_distributed=True`` takes the negatives from the global batch as ours does (with one
      process it changes nothing).
    """

    def __init__(self, backbone_factory: BackboneFactory, config: LightlySimCLRConfig | None = None) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        c = config or LightlySimCLRConfig()
        self.encoder = backbone_factory()
        self.projector = SimCLRProjectionHead(int(self.encoder.feature_dim), c.proj_hidden, c.proj_dim)
        self.criterion = NTXentLoss(temperature=temperature(c, PUBLISHED_TEMPERATURE), gather_distributed=True)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector]

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        z1, z2 = self.projector(self.encoder(torch.cat([view1, view2]))).chunk(2)
        return {"loss": self.criterion(z1, z2), "proj": z1.detach()}

    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        return {}


# ============================================================================================ the cells
def simclr_temperature() -> float:
    return float(build_config(files=[find_preset(SIMCLR_PRESET)]).method.temperature)


def ours_cell(method: str) -> Cell:
    overrides = (f"method.temperature={simclr_temperature()}",) if method == "simclr" else ()
    return Cell(f"ours-{method}", f"ours {method}", method, overrides)


def mirrored(ours: MethodConfig, theirs: type[MethodConfig]) -> tuple[str, ...]:
    """``--set`` overrides giving ``theirs`` our resolved section's values (a preset written for ``byol`` is
    dropped for another method name: ``byol.train.config.parse_method``); a ConfigError for a value of ours
    that lightly's construction cannot express (``IMPLIED``)."""
    values = to_dict(ours)
    for key, fixed in theirs.IMPLIED.items():
        if key in values and values[key] != fixed:
            raise ConfigError(f"method.{key}={values[key]!r}: {theirs.name} is built as lightly builds it "
                              f"({key} = {fixed!r}); compare with a preset or --set that gives ours the same")
    own = {f.name for f in dataclasses.fields(theirs)} - {"name"}
    return tuple(f"method.{k}={json.dumps(values[k])}" for k in sorted(own & values.keys()))


def cell(impl: str, method: str, scale: Scale, seed: int) -> Cell:
    ours = ours_cell(method)
    if impl == "ours":
        return ours
    twin = TWINS[method]
    theirs = {"lightly-byol": LightlyBYOLConfig, "lightly-simclr": LightlySimCLRConfig}[twin]
    return Cell(f"lightly-{method}", f"lightly {method}", twin, mirrored(cell_config(ours, scale, seed).method, theirs))


def done(out: Path) -> dict[str, dict[str, Any]]:
    """The lines of ``out`` by key (none when it does not exist yet)."""
    if not out.is_file():
        return {}
    rows = (json.loads(line) for line in out.read_text().splitlines() if line.strip())
    return {r["key"]: r for r in rows}


def run_one(impl: str, method: str, scale: Scale, seed: int, out: Path, runs_dir: Path) -> dict[str, Any] | None:
    """Train and score one (impl, method, seed) unless ``out`` has it; append its line."""
    c = cell(impl, method, scale, seed)
    key = cell_id(c, scale, seed)
    tag = f"{impl} {method} seed {seed}"
    if key in done(out):
        print(f"{tag}: done before ({key}), skipped", flush=True)
        return None
    print(f"{tag}: running ({key}) {' '.join(c.overrides)}", flush=True)
    record = run_cell(c, scale, seed, runs_dir)
    shown = [s for s in scale.overrides if not s.startswith(("train.threads=", "train.progress="))]  # no result
    record.update(key=key, impl=impl, method=method, registered=c.method,
                  scale={**scale.describe(), "overrides": shown}, command=" ".join(shlex.quote(x) for x in sys.argv))
    with out.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
    print(f"{tag}: kNN {record['knn']:.2f}, linear {record['linear']:.2f}, {record['steps']} steps, "
          f"{record['wall_seconds'] / 60:.1f} min{' (collapsed)' if record.get('collapsed') else ''}", flush=True)
    return record


# ============================================================================================ the table
def _stats(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else math.nan)


def _sd(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def compare(ours: list[float], theirs: list[float]) -> dict[str, Any]:
    """Means, seed spreads, the gap ``ours - theirs`` and whether it is within ``2 s`` (``s`` pooled over seeds)."""
    (mo, so), (mt, st) = _stats(ours), _stats(theirs)
    s = math.sqrt((so**2 + st**2) / 2) if len(ours) > 1 and len(theirs) > 1 else math.nan
    return {"ours": mo, "ours_sd": so, "theirs": mt, "theirs_sd": st, "range": (min(theirs), max(theirs)),
            "gap": mo - mt, "s": s, "within": None if math.isnan(s) else abs(mo - mt) <= 2 * s}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per scale and method, kNN and linear of ours and lightly's (mean +- sd over seeds)."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        scale = json.dumps(r["scale"], sort_keys=True)
        groups.setdefault((scale, r["method"]), {}).setdefault(r["impl"], []).append(r)
    lines = ["| data | epochs | method | metric | ours | lightly | lightly's range | gap (ours - lightly) | 2 s | "
             "within | minutes per run (ours / lightly) |", "|" + "---|" * 11]
    for (scale, method), by_impl in sorted(groups.items()):
        sc = json.loads(scale)
        if not all(by_impl.get(i) for i in IMPLS):
            lines.append(f"| {Path(str(sc['data'])).stem} | {sc['epochs']} | {method} | - | "
                         f"{', '.join(f'{i}: {len(by_impl.get(i, []))} seeds' for i in IMPLS)} (waiting) |" + " |" * 6)
            continue
        minutes = " / ".join(f"{statistics.fmean(r['wall_seconds'] for r in by_impl[i]) / 60:.1f}" for i in IMPLS)
        for metric in ("knn", "linear"):
            c = compare(*([r[metric] for r in by_impl[i]] for i in IMPLS))
            within = "-" if c["within"] is None else ("yes" if c["within"] else "**no**")
            lines.append(f"| {Path(str(sc['data'])).stem} | {sc['epochs']} | {method} | {metric} | "
                         f"{c['ours']:.2f} ± {_sd(c['ours_sd'])} ({len(by_impl['ours'])}) | "
                         f"{c['theirs']:.2f} ± {_sd(c['theirs_sd'])} ({len(by_impl['lightly'])}) | "
                         f"{c['range'][0]:.2f} - {c['range'][1]:.2f} | {c['gap']:+.2f} | {_sd(2 * c['s'])} | "
                         f"{within} | {minutes} |")
    return "\n".join(lines)


# ============================================================================================ the CLI
def _pieces():
    """benchmarks/parity_pieces.py (``--check-pieces``), loaded by path: this script may itself be loaded so."""
    path = Path(__file__).with_name("parity_pieces.py")
    spec = importlib.util.spec_from_file_location("parity_pieces", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="labeled image folder or .zip (train/ and test/ or val/), or a named data set")
    ap.add_argument("--config", default="folder", help="preset both implementations train with (default folder)")
    ap.add_argument("--epochs", type=float, help="fixed epochs per run (equal steps for both)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", choices=sorted(TWINS), default=sorted(TWINS))
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="ours and/or lightly")
    ap.add_argument("--out", default="benchmarks/parity.jsonl", help="JSON lines, appended; present ones skipped")
    ap.add_argument("--runs-dir", default="runs/parity", help="the runs' directories (checkpoints: resumable)")
    ap.add_argument("--threads", type=int, help="torch threads per run (train.threads)")
    ap.add_argument("--eval-train", type=int, default=10000,
                    help="labeled train images the probes fit on, a seeded subset (0: all; default 10000)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--check-pieces", action="store_true", help="compare the pieces at initialisation and exit")
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    a = ap.parse_args(argv)
    if not (a.check_pieces or a.table) and (not a.data or a.epochs is None or a.epochs <= 0):
        ap.error("--data and --epochs (> 0) are required to train")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    from byol.run.files import pin_code_state

    pin_code_state()  # the commit of the code imported now, not of a later commit during the sweep
    out = Path(a.out)
    if a.check_pieces:
        print(_pieces().check_pieces())
        return 0
    if not a.table:
        sets = (*a.set, *([f"train.threads={a.threads}"] if a.threads else ()), "train.progress=false")
        scale = Scale(preset=a.config, data=a.data, budget=None, epochs=a.epochs, eval_train=a.eval_train or None,
                      overrides=tuple(sets))
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            for seed in a.seeds:
                for method in a.methods:
                    for impl in a.impls:
                        run_one(impl, method, scale, seed, out, Path(a.runs_dir))
        except ByolError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(table(list(done(out).values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

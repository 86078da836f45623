"""Recipe search for photo folders, selected on validation: one pretraining run per variant, resumable.

Each row runs ``byol pretrain`` (the library's own path: the engine, the planner, the verdict) from a
preset with a variant's ``--set`` overrides, and records what the selection needs, all from the training
split: the end-of-run verdict (kNN k=20 of the encoder against the same network at random init, on a
stratified 10% of train held out as queries; ``byol.train.verdict``), the online kNN curve per epoch (queries
held out of train, ``byol.train.monitor``), the collapse statistics and each layer's relative update size
(``upd/...``) over the first epochs. The test split is never read: report a chosen recipe with
``byol eval`` afterwards (docs/results.md).

Rows append to ``--out`` (JSON lines) as each finishes; a row whose key (data, preset, length, overrides,
seed) is already there is skipped, so a killed sweep or one split over sessions resumes. Examples:

    python benchmarks/sweep_folder.py --data ../shared/datasets/intel-scenes-96.zip --epochs 6 \
        --variants base lr0.3 lr1.2 warm2 tau0.99 crop0.08 --seeds 0 1
    python benchmarks/sweep_folder.py --data ../shared/datasets/intel-scenes-96.zip --epochs 6 \
        --variant mine="optim.base_lr=0.4 method.tau_base=0.98"
    python benchmarks/sweep_folder.py --table            # the Markdown table of the rows so far
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

#: Named variants: ``--set`` overrides on top of the preset (the folder preset's knobs of issue 12 part 1).
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "lr0.3": ("optim.base_lr=0.3",), "lr1.2": ("optim.base_lr=1.2",),
    "warm0": ("optim.warmup_epochs=0.0",), "warm2": ("optim.warmup_epochs=2.0",),
    "tau0.9": ("method.tau_base=0.9",), "tau0.99": ("method.tau_base=0.99",),
    "tau0.996": ("method.tau_base=0.996",),
    "crop0.08": ("views.both.crop_scale=[0.08,1.0]",), "crop0.35": ("views.both.crop_scale=[0.35,1.0]",),
    "noblur": ("views.both.blur_p=0.0",),
    "bs64": ("optim.batch_size=64",), "bs256": ("optim.batch_size=256",),
    "wide": ("model.options.widths=[32,64,128,256]",), "narrow": ("model.options.widths=[8,16,32,256]",),
    "px24": ("data.image_size=24",), "px40": ("data.image_size=40",),
    "heads512": ("method.proj_hidden=512", "method.pred_hidden=512"),
    "predlr3": ("optim.predictor_lr_mult=3.0",), "predlr10": ("optim.predictor_lr_mult=10.0",),
    "simclr": ("method.name=simclr",), "wd1e-4": ("optim.weight_decay=1e-4",), "wd2e-3": ("optim.weight_decay=2e-3",),
}

#: Epochs at which the curves are sampled in the row (and the table).
CURVE_EPOCHS = (1, 2, 3, 5, 8)


def row_key(data: str, preset: str, length: str, overrides: tuple[str, ...], seed: int) -> str:
    text = json.dumps([data, preset, length, list(overrides), seed])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def done_keys(out: Path) -> set[str]:
    if not out.is_file():
        return set()
    return {json.loads(line)["key"] for line in out.read_text().splitlines() if line.strip()}


def _at_epochs(rows: list[dict], key: str) -> dict[str, float]:
    """``key``'s first logged value at or after each of :data:`CURVE_EPOCHS` (and the last one)."""
    pts = [(r["epoch"], r[key]) for r in rows if key in r]
    out = {}
    for e in CURVE_EPOCHS:
        later = [v for ep, v in pts if ep >= e - 1e-9]
        if later:
            out[str(e)] = float(f"{later[0]:.4g}")
    if pts:
        out["last"] = float(f"{pts[-1][1]:.4g}")
    return out


def summarize_run(run_dir: Path) -> dict:
    """The curves of a finished run from its ``metrics.jsonl``: online kNN per evaluation, eff_rank and
    the mean relative update size of each layer, sampled at :data:`CURVE_EPOCHS`, and the predictor's dynamics
    when the method logs them."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    knn = [(round(r["epoch"], 3), r["knn_top1"]) for r in rows if "knn_top1" in r]
    layers = sorted({k for r in rows for k in r if k.startswith("upd/")})
    dynamics = {k: _at_epochs(rows, k) for k in ("pred_eff_rank", "pred_cos_proj", "target_cos_proj")
                if any(k in r for r in rows)}  # byol.train.monitor.dynamics_stats (methods with a predictor)
    return {"knn_curve": knn, "eff_rank": _at_epochs(rows, "eff_rank"), "loss": _at_epochs(rows, "loss"),
            "upd": {k[4:]: _at_epochs(rows, k) for k in layers}, **dynamics}


def linear_on_validation(summary: dict) -> float:
    """Linear top-1 (%) of the run's encoder on a fixed validation split of train: the same L-BFGS probe as
    ``byol eval linear`` / the demo, fitted on 90% of the labeled training images and scored on the other
    stratified 10% (split seed 0 for every row, so rows of any seed share it). No test image is read."""
    import torch

    from byol.eval.features import extract_features
    from byol.eval.linear import linear_eval
    from byol.eval.splits import stratified_split
    from byol.train.monitor import labeled_positions
    from byol.train.verdict import HELD_OUT

    train = summary["train"]
    labels = torch.as_tensor(train.labels)
    labeled = labeled_positions(labels)
    keep, held = stratified_split(labels[labeled], HELD_OUT, 0, name="validation share")
    keep, held = labeled[keep], labeled[held]
    view = dict(size=summary["size"], mean=summary["mean"], std=summary["std"], device=summary["device"])
    enc = summary["method"].encoder
    images = train.images
    ftr = extract_features(enc, torch.as_tensor(images[keep.numpy()]), **view)
    fva = extract_features(enc, torch.as_tensor(images[held.numpy()]), **view)
    return round(float(linear_eval(ftr, labels[keep], fva, labels[held])["top1"]), 2)


def run_row(name: str, overrides: tuple[str, ...], a: argparse.Namespace, seed: int, out: Path) -> dict | None:
    from byol.config import find_preset
    from byol.train.config import build_config
    from byol.reproduce.runner import provenance
    from byol.runtime.device import resolve_device
    from byol.train.pretrain import run_pretrain

    length = f"epochs={a.epochs}" if a.epochs else f"budget={a.budget}"
    key = row_key(a.data, a.config, length + ("+linear" if a.linear else ""), overrides, seed)
    if key in done_keys(out):
        print(f"{name} seed {seed}: done before ({key}), skipped", flush=True)
        return None
    length_set = [f"train.epochs={a.epochs}", "train.budget=null"] if a.epochs else [f"train.budget={a.budget}"]
    sets = [*a.set, *overrides, f"train.seed={seed}", "train.progress=false", *length_set]
    cfg = build_config(files=[find_preset(a.config)], overrides=sets,
                       extra={"data": {"source": a.data}})
    run_dir = Path(a.runs_dir) / key
    print(f"{name} seed {seed}: running ({key}) {' '.join(overrides) or '(preset)'}", flush=True)
    t0 = time.perf_counter()
    s = run_pretrain(cfg, run_dir)
    v = s.get("verdict", {})
    row = {"key": key, "variant": name, "overrides": list(overrides), "seed": seed, "data": a.data,
           "preset": a.config, "length": length, "epochs": round(s["epochs"], 3), "steps": s["steps"],
           "train_s": round(s["seconds"], 1), "wall_s": round(time.perf_counter() - t0, 1),
           "pairs_s": round(s["steps"] * cfg.optim.batch_size / max(s["seconds"], 1e-9), 1),
           "stop_reason": s["stop_reason"], "encoder_knn": v.get("encoder_knn"),
           "random_knn": v.get("random_init_knn"), "gain": v.get("gain"), "collapsed": v.get("collapsed"),
           "score": "val (verdict: held-out 10% of train)", **summarize_run(run_dir),
           "host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "threads": cfg.train.threads, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "command": " ".join(shlex.quote(x) for x in sys.argv),
           "provenance": provenance(cfg, resolve_device(cfg.train.device))}
    if a.linear:
        row["linear_val"] = linear_on_validation(s)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{name} seed {seed}: linear (val) {row.get('linear_val', '-')}, kNN {row['encoder_knn']} vs random {row['random_knn']} (gain {row['gain']}), "
          f"{row['epochs']} epochs, {row['train_s']} s", flush=True)
    return row


def _cell(x: float, decimals: int = 1) -> str:
    """``decimals`` decimals, or "-" for a point the rows did not reach (a budget that ended before that epoch)."""
    return "-" if math.isnan(x) else f"{x:.{decimals}f}"


def table(out: Path) -> str:
    """Mean gain over seeds per (variant, length), best first, with the online kNN at the curve epochs."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        # rows of a --linear sweep are a sweep of their own (another session, often another host)
        groups.setdefault((r["data"], r["length"], r["variant"], tuple(r["overrides"]), "linear_val" in r),
                          []).append(r)
    linear = any("linear_val" in r for r in rows)  # rows of --linear: one more column
    lines = ["| data | length | variant | overrides | seeds | epochs | pairs/s | kNN (val) | random init | gain | "
             "online kNN at epochs 1 / 2 / 3 / 5 | eff_rank at 1 / 3 |" + (" linear (val) |" if linear else ""),
             "|" + "---|" * (13 if linear else 12)]
    def mean(xs):
        xs = [x for x in xs if x is not None]
        return statistics.fmean(xs) if xs else float("nan")
    def knn_at(r, e):
        later = [k for ep, k in r["knn_curve"] if ep >= e - 1e-9]
        return later[0] if later else None
    for (data, length, variant, ov, _), rs in sorted(groups.items(), key=lambda kv: -mean([r["gain"] for r in kv[1]])):
        curve = " / ".join(_cell(mean([knn_at(r, e) for r in rs])) for e in (1, 2, 3, 5))
        rank = " / ".join(_cell(mean([r['eff_rank'].get(e) for r in rs])) for e in ("1", "3"))
        gains = [r["gain"] for r in rs if r["gain"] is not None]
        spread = f" ± {statistics.stdev(gains):.1f}" if len(gains) > 1 else ""
        lines.append(f"| {Path(data).stem} | {length} | {variant} | {' '.join(ov) or '(preset)'} | {len(rs)} | "
                     f"{mean([r['epochs'] for r in rs]):.1f} | {mean([r['pairs_s'] for r in rs]):.0f} | "
                     f"{mean([r['encoder_knn'] for r in rs]):.2f} | {mean([r['random_knn'] for r in rs]):.2f} | "
                     f"{mean(gains):+.2f}{spread} | {curve} | {rank} |"
                     + (f" {_cell(mean([r.get('linear_val') for r in rs]), 2)} |" if linear else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="labeled image folder or .zip (train/<class>/...)")
    ap.add_argument("--config", default="folder", help="preset the variants start from (default folder)")
    ap.add_argument("--epochs", type=float, default=None, help="fixed epochs per row")
    ap.add_argument("--budget", default=None, help="wall-clock budget per row instead (sensitive to load)")
    ap.add_argument("--variants", nargs="*", default=["base"], help=f"named variants: {', '.join(VARIANTS)}")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                    help="a custom variant: a name and space-separated KEY=VALUE overrides")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every row")
    ap.add_argument("--out", default="benchmarks/sweep_folder.jsonl")
    ap.add_argument("--runs-dir", default="runs/sweep_folder")
    ap.add_argument("--linear", action="store_true",
                    help="also score the linear probe on a fixed stratified 10%% of train (fitted on the rest)")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    a = ap.parse_args(argv)
    from byol.run.files import pin_code_state

    pin_code_state()  # the commit of the code imported now, not of a later commit during the sweep
    out = Path(a.out)
    if a.table:
        print(table(out))
        return 0
    if not a.data or (a.epochs is None) == (a.budget is None):
        ap.error("--data and exactly one of --epochs / --budget are required")
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    todo = [(v, VARIANTS[v]) for v in a.variants]
    for spec in a.variant:
        name, _, text = spec.partition("=")
        todo.append((name, tuple(text.split())))
    for seed in a.seeds:
        for name, overrides in todo:
            run_row(name, overrides, a, seed, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``byol demo``: BYOL on Fashion-MNIST with the CPU preset, then linear + kNN evaluation against
the same architecture at random init and raw pixels; prints a table and writes ``results.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from byol.atomic import atomic_write
from byol.config import find_preset
from byol.train.config import PretrainConfig, build_config
from byol.models.factory import build_encoder
from byol.train.pretrain import run_pretrain
from byol.data import load_images
from byol.eval.compare import evaluate_encoders
from byol.eval.floor import BN_IMAGES, recalibrate_bn
from byol.reports import plot_training_curves
from byol.train.verdict import verdict_lines


#: The random-init floor's two variants (byol.eval.floor): BN's initial statistics, and recalibrated on train.
FLOORS = ("random_init", "random_init_bn")
ROW_NAMES = {"random_init": "random init (initial BN statistics)", "random_init_bn": "random init (BN recalibrated)"}


def fair_gains(results: dict[str, Any]) -> dict[str, float]:
    """BYOL's gain over the stronger random-init variant, per protocol (what the demo claims)."""
    return {p: round(results[p]["byol"] - max(results[p][f] for f in FLOORS if f in results[p]), 2)
            for p in ("linear", "knn")}


def format_table(results: dict[str, Any]) -> str:
    rows = [("encoder", "linear top-1 %", f"kNN top-1 % (k={results.get('knn_k', 20)})")]
    for name in ("byol", *FLOORS, "raw_pixels"):
        lin = results["linear"].get(name)
        knn = results["knn"].get(name)
        if lin is not None or knn is not None:
            rows.append((ROW_NAMES.get(name, name), f"{lin:.2f}" if lin is not None else "-",
                         f"{knn:.2f}" if knn is not None else "-"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "-+-".join("-" * x for x in w))
    return "\n".join(lines)


def run_demo(run_dir: Path, *, config: str = "fashion-mnist", budget: str | None = None,
             overrides: list[str] | tuple = (), data_dir: str | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if budget:
        extra.setdefault("train", {})["budget"] = budget
    if data_dir:
        extra.setdefault("data", {})["data_dir"] = data_dir
    cfg: PretrainConfig = build_config(files=[find_preset(config)], overrides=overrides, extra=extra)
    t0 = time.perf_counter()
    summary = run_pretrain(cfg, run_dir)
    pretrain_seconds = summary["seconds"]
    print(f"pretraining: {summary['epochs']:.2f} epochs, {summary['steps']} steps in {pretrain_seconds:.0f} s "
          f"({summary['stop_reason']}, {summary['precision']}); evaluating...", flush=True)
    for line in verdict_lines(summary["verdict"]):
        print(line, flush=True)
    t_eval = time.perf_counter()
    d = cfg.data
    train = summary["train"]
    test = load_images(d.source, "test", image_size=d.image_size, data_dir=d.data_dir, cache_dir=d.cache_dir,
                       download=d.download, progress=False)
    torch.manual_seed(cfg.train.seed + 1)
    random_enc = build_encoder(cfg.model, train.num_channels).to(summary["device"])
    view = dict(size=summary["size"], mean=summary["mean"], std=summary["std"], device=summary["device"])
    recalibrated = recalibrate_bn(random_enc, train.images, **view, seed=cfg.train.seed)  # train images only
    encoders = {"byol": summary["method"].encoder, "random_init": random_enc, "random_init_bn": recalibrated}
    res = evaluate_encoders(encoders, train, test, size=summary["size"], mean=summary["mean"], std=summary["std"],
                            device=summary["device"])
    results = {
        "dataset": d.source,
        "backbone": cfg.model.backbone + (f"(width={cfg.model.width})" if cfg.model.width != 1 else "")
        + (f" {cfg.model.options}" if cfg.model.options else ""),
        "pretrain_seconds": round(pretrain_seconds, 1),
        "epochs": round(summary["epochs"], 3),
        "steps": summary["steps"],
        "batch_size": cfg.optim.batch_size,
        "precision": summary["precision"],
        "linear": {k: round(v, 2) for k, v in res["linear"].items()},
        "knn": {k: round(v, 2) for k, v in res["knn"].items()},
        "knn_k": 20,
        "floor_images": min(BN_IMAGES, len(train)),
        "eval_seconds": round(time.perf_counter() - t_eval, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "config": str(find_preset(config)),
        "overrides": list(overrides),
    }
    results["gain_over_floor"] = fair_gains(results)
    atomic_write(run_dir / "results.json", json.dumps(results, indent=2))
    plot_training_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", title="BYOL on Fashion-MNIST (demo)")
    print()
    print(format_table(results))
    gains = fair_gains(results)
    print(f"BYOL over the stronger random init: linear {gains['linear']:+.2f}, kNN {gains['knn']:+.2f} points")
    print(f"\nresults: {run_dir / 'results.json'}   curves: {run_dir / 'curves.png'}")
    return results

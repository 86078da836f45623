"""Throughput of BYOL pretraining on this machine: views alone and the full training step.

For each setting it measures, alternating repetitions and reporting medians:
  - views/s: the two augmented views (the paper's T and T', or the preset's) for a uint8 batch;
  - step/s: the whole optimizer step (views + online/target forward + backward + LARS + EMA);
  - FLOPs per pair (torch.utils.flop_counter on forward+backward of one step), achieved GFLOP/s and
    MFU against the fp32 matmul peak measured in the same run;
  - the share of the step spent making views;
  - the folder preset's step at 32 and 64 px (`--only folder-32 --only folder-64`, not in the default set);
  - the paper's two views alone at 32 px RGB, batch 256 (issue 4's views target);
  - feature extraction (eval mode, no grad) with the demo backbone on 10k 28 px images (issue 3's target).

    python benchmarks/throughput.py                 # everything
    python benchmarks/throughput.py --only demo --reps 5
    BYOL_MALLOC=glibc python benchmarks/throughput.py     # glibc's malloc defaults instead of the CLI's
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from byol.augment import TwoViewAugment, paper_views
from byol.augment import view_specs
from byol.config import find_preset
from byol.methods import build_method
from byol.models.factory import backbone_factory, build_encoder
from byol.train.config import PretrainConfig, build_config
from byol.runtime.device import autocast_for
from byol.eval import extract_features
from byol.optim.optimizers import build_optimizer
from byol.runtime import tune_malloc


def matmul_peak(n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Matmul GFLOP/s (best of ``reps``; fp32 unless ``dtype``) — the machine's practical limit for dense compute."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


#: the folder preset's step at its 32 px default and at the 64 px a user may pass (issue 12's 226 pairs/s)
FOLDER = ("folder-32", "folder-64")


def setting(name: str) -> tuple[PretrainConfig, int, int, int]:
    """(config, channels, image size, batch)."""
    if name == "demo":
        cfg = build_config(files=[find_preset("fashion-mnist")])
        return cfg, 1, 28, cfg.optim.batch_size
    if name == "resnet18-cifar":
        cfg = build_config(extra={
            "model": {"backbone": "resnet18", "small_stem": True, "proj_hidden": 4096, "proj_dim": 256, "pred_hidden": 4096},
            "method": {"target_init": "copy"}, "optim": {"batch_size": 256}})
        return cfg, 3, 32, 256
    if name in FOLDER:  # the default for `byol pretrain --data FOLDER`, RGB at 32 or 64 px
        size = int(name.split("-")[1])
        cfg = build_config(files=[find_preset("folder")], extra={"data": {"image_size": size}})
        return cfg, 3, size, cfg.optim.batch_size
    raise SystemExit(f"unknown setting {name}")


class StepParts:
    """One setting's training step, split into its phases so that benchmarks can time them separately."""

    def __init__(self, name: str, amp: str = "off", batch: int | None = None) -> None:
        cfg, ch, size, batch0 = setting(name)
        batch = batch or batch0
        self.autocast, _ = autocast_for(torch.device("cpu"), amp)  # as the engine applies train.amp
        self.cfg, self.channels, self.size, self.batch = cfg, ch, size, batch
        torch.manual_seed(0)
        s1, s2 = view_specs(cfg.views.view1, cfg.views.view2, cfg.views.both)
        self.aug = TwoViewAugment(s1, s2, cfg.data.view_size or size, [0.5] * ch, [0.25] * ch)
        self.method = build_method(cfg.method, backbone_factory(cfg.model, ch)).to(memory_format=torch.channels_last)
        o = cfg.optim
        self.opt = build_optimizer(o.name, self.method.trainable_modules(), lr=0.1, weight_decay=o.weight_decay,
                                   momentum=o.momentum, eta=o.eta)
        self.x = torch.randint(0, 256, (batch, ch, size, size), dtype=torch.uint8)
        self.g = torch.Generator().manual_seed(0)

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = self.aug(self.x, self.g)
        return v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return self.method(v1, v2)["loss"]

    def backward(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()

    def optimizer(self) -> None:
        self.opt.step()

    def ema(self, k: int) -> None:
        self.method.after_step(k, 1000)

    def step(self, k: int = 0) -> None:
        v1, v2 = self.views()
        self.backward(self.forward(v1, v2))
        self.optimizer()
        self.ema(k)

    def flops_per_pair(self) -> float:
        """FLOPs of one forward+backward (EMA and optimizer not counted), per image pair."""
        v1, v2 = self.views()
        with FlopCounterMode(display=False) as fc:
            self.method(v1, v2)["loss"].backward()
        self.opt.zero_grad(set_to_none=True)
        return fc.get_total_flops() / self.batch


def bench(name: str, reps: int, steps: int, peak: float, amp: str = "off") -> dict:
    sp = StepParts(name, amp)
    cfg, batch, size, ch, o = sp.cfg, sp.batch, sp.size, sp.channels, sp.cfg.optim
    views, step = sp.views, sp.step
    flops_per_pair = sp.flops_per_pair()
    step()  # warm-up
    view_rates, step_rates = [], []
    for _ in range(reps):  # alternate the two measurements
        t = time.perf_counter()
        for _ in range(steps):
            views()
        view_rates.append(batch * steps / (time.perf_counter() - t))
        t = time.perf_counter()
        for k in range(steps):
            step(k)
        step_rates.append(batch * steps / (time.perf_counter() - t))
    vps, sps = statistics.median(view_rates), statistics.median(step_rates)
    gflops = flops_per_pair * sps / 1e9
    return {
        "setting": name, "amp": amp, "backbone": cfg.model.backbone, "optimizer": o.name, "batch": batch, "size": size, "channels": ch,
        "views_pairs_per_s": round(vps, 1), "step_pairs_per_s": round(sps, 1),
        "gflop_per_pair": round(flops_per_pair / 1e9, 4), "achieved_gflops": round(gflops, 1),
        "mfu": round(gflops / peak, 3), "views_share_of_step": round(sps / vps, 3),
        "spread_step": [round(min(step_rates), 1), round(max(step_rates), 1)],
    }


def bench_paper_views(reps: int, batch: int = 256, size: int = 32, steps: int = 10) -> dict:
    """The paper's T and T' on a uint8 RGB batch (per-sample parameters), pairs/s: the default path (the fused
    CPU kernel when it builds) and the eager torch ops, alternating in one process."""
    from byol.augment import fused

    s1, s2 = paper_views()
    aug = TwoViewAugment(s1, s2, size, [0.5] * 3, [0.25] * 3)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    modes = {"default": "1", "eager": "0"}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    old = os.environ.get("BYOL_FUSED_VIEWS")
    try:
        for _ in range(reps):
            for mode, flag in modes.items():
                os.environ["BYOL_FUSED_VIEWS"] = flag
                aug(x, g)
                t = time.perf_counter()
                for _ in range(steps):
                    aug(x, g)
                rates[mode].append(batch * steps / (time.perf_counter() - t))
    finally:
        if old is None:
            os.environ.pop("BYOL_FUSED_VIEWS", None)
        else:
            os.environ["BYOL_FUSED_VIEWS"] = old
    med = {m: statistics.median(r) for m, r in rates.items()}
    return {"setting": "paper-views-rgb32", "batch": batch, "size": size,
            "fused_kernel": fused.available(),
            "views_pairs_per_s": round(med["default"], 1),
            "spread": [round(min(rates["default"]), 1), round(max(rates["default"]), 1)],
            "eager_views_pairs_per_s": round(med["eager"], 1),
            "eager_spread": [round(min(rates["eager"]), 1), round(max(rates["eager"]), 1)],
            "fused_speedup": round(med["default"] / med["eager"], 2)}


def bench_features(reps: int, n: int = 10000) -> dict:
    """Feature extraction (BN eval, no grad, batch 512) with the demo backbone on n 28 px grayscale images."""
    cfg = build_config(files=[find_preset("fashion-mnist")])
    torch.manual_seed(0)
    enc = build_encoder(cfg.model, 1)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    kw = dict(size=28, mean=[0.286], std=[0.353], batch_size=512)
    extract_features(enc, x[:1024], **kw)
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        extract_features(enc, x, **kw)
        rates.append(n / (time.perf_counter() - t))
    return {"setting": "features-demo", "images": n, "images_per_s": round(statistics.median(rates), 1),
            "spread": [round(min(rates), 1), round(max(rates), 1)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=["demo", "resnet18-cifar", *FOLDER, "views", "features"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--amp", choices=["off", "bf16"], default="off",
                    help="autocast of the step's forward (bf16: MFU against the bf16 matmul peak); default fp32")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tuned = tune_malloc()  # as the CLI does (BYOL_MALLOC=glibc keeps glibc's defaults)
    peak = matmul_peak(dtype=torch.bfloat16 if a.amp == "bf16" else torch.float32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"{'bf16' if a.amp == 'bf16' else 'fp32'} matmul peak {peak:.1f} GFLOP/s; malloc {'keeps freed memory (byol default)' if tuned else 'glibc defaults'}")
    rows = []
    only = a.only or ["views", "features", "demo", "resnet18-cifar"]
    if "views" in only:
        r = bench_paper_views(a.reps)
        rows.append(r)
        print(f"paper views 32 px RGB, batch 256: {r['views_pairs_per_s']:8.0f} pairs/s ({r['spread'][0]}-{r['spread'][1]}; "
              f"fused kernel {'on' if r['fused_kernel'] else 'unavailable'}) | eager ops {r['eager_views_pairs_per_s']:8.0f} "
              f"({r['eager_spread'][0]}-{r['eager_spread'][1]}) | {r['fused_speedup']:.2f}x", flush=True)
    if "features" in only:
        r = bench_features(a.reps)
        rows.append(r)
        print(f"features, demo backbone, 10k x 28 px: {r['images_per_s']:8.0f} images/s ({r['spread'][0]}-{r['spread'][1]})", flush=True)
    for name in [n for n in only if n in ("demo", "resnet18-cifar", *FOLDER)]:
        steps = 1 if name == "resnet18-cifar" else 10
        reps = max(2, a.reps // 2) if name == "resnet18-cifar" else a.reps
        r = bench(name, reps, steps, peak, a.amp)
        rows.append(r)
        print(f"{name:16s} views {r['views_pairs_per_s']:8.0f} pairs/s | step {r['step_pairs_per_s']:7.1f} pairs/s "
              f"({r['spread_step'][0]}-{r['spread_step'][1]}) | {r['gflop_per_pair']:.4f} GFLOP/pair | "
              f"{r['achieved_gflops']:.1f} GFLOP/s | MFU {r['mfu']:.2f} | views {100 * r['views_share_of_step']:.1f}% of step",
              flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"peak_gflops": peak, "torch": torch.__version__, "threads": torch.get_num_threads(),
                                              "malloc_tuned": tuned, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())

"""Is this machine ready for the paper's recipe? The imagenet-paper preset (ResNet-50, the paper's views, LARS,
4096/256 heads) trained for a few hundred steps on whatever device is found, through the library's Trainer
(views, pinned host-to-device copies, AMP, the EMA), on generated images held in host memory.

Prints pairs/s (steady state, after ``--warmup`` steps), the model FLOPs utilisation (MFU: FLOPs of a
training step, counted by torch.utils.flop_counter, per second, against the dense matmul peak measured in
the same run and in the same precision: fp32, or bf16/fp16 under autocast) and the peak memory (CUDA:
``max_memory_allocated``; elsewhere the process's peak RSS).

    python benchmarks/gpu_check.py                        # paper preset, batch 128 per device, 300 steps
    python benchmarks/gpu_check.py --batch-size 256 --steps 500
    python benchmarks/gpu_check.py --tiny --steps 3       # a tiny model on CPU in seconds (what the tests run)

The global batch of the paper (4096) is split over many accelerators; here ``--batch-size`` is what one
device trains per step. MFU counts the model's FLOPs only (views and the optimizer are overhead).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from byol.runtime import dist
from byol.augment import TwoViewAugment
from byol.config import find_preset
from byol.data.batches import CachedImages
from byol.train.config import PretrainConfig, build_config
from byol.train.loop import LoopOptions, Trainer
from byol.methods import build_method
from byol.models.factory import backbone_factory
from byol.optim.optimizers import build_optimizer
from byol.runtime.device import resolve_amp, resolve_device

#: a seconds-long stand-in for tests: the preset with a tiny CNN and heads, 16 px views
TINY = ["model.backbone=convnet", "model.options={widths: [8, 16]}", "method.proj_hidden=64", "method.proj_dim=16",
        "method.pred_hidden=64", "views.both={blur_p: 0.0}"]
DTYPES = {"off": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Best dense matmul FLOP/s of ``n x n`` matrices in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / max(time.perf_counter() - t, 1e-9))
    return best


def step_flops(method: torch.nn.Module, augment: TwoViewAugment, images: torch.Tensor, device: torch.device,
               autocast) -> float:
    """FLOPs of one training step's forward and backward (on a copy: the method's state is not touched)."""
    probe = copy.deepcopy(method)
    v1, v2 = augment(images.to(device), torch.Generator(device=device).manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss = probe(v1, v2)["loss"]
        loss.backward()
    return float(counter.get_total_flops())


def build(args: argparse.Namespace) -> tuple[PretrainConfig, torch.device]:
    overrides = [f"optim.batch_size={args.batch_size}", f"train.amp={args.amp}", "train.progress=false",
                 f"train.device={args.device}", *(TINY if args.tiny else []), *args.set]
    cfg = build_config(files=[find_preset("imagenet-paper")], overrides=overrides)
    return cfg, dist.local_device(resolve_device(cfg.train.device))


def run(args: argparse.Namespace) -> dict:
    """Train ``args.warmup + args.steps`` steps and measure; returns the printed numbers."""
    cfg, device = build(args)
    size = args.image_size or (16 if args.tiny else cfg.data.image_size or 224)
    batch = cfg.optim.batch_size
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2 * batch, 3, size, size), dtype=torch.uint8)  # two steps per epoch
    augment = TwoViewAugment(*cfg.views.specs, size, cfg.data.mean or [0.5] * 3, cfg.data.std or [0.25] * 3)
    method = build_method(cfg.method, backbone_factory(cfg.model, 3)).to(device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    total = args.warmup + args.steps
    options = dataclasses.replace(LoopOptions.from_config(cfg.train, cfg.optim, evaluate_every=0.0),
                                  epochs=total / 2, log_every=10**9, budget_seconds=None)
    opt = build_optimizer(cfg.optim.name, method.trainable_modules(), lr=options.peak_lr,
                          weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum, eta=cfg.optim.eta)
    starts: list[float] = []

    def timed(x: torch.Tensor, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        starts.append(time.perf_counter())  # the start of every optimizer step (no accumulation)
        return augment(x, g)

    trainer = Trainer(method, opt, timed, CachedImages(images), batch_size=batch, device=device, options=options)
    flops = step_flops(method, augment, images[:batch], device, trainer.autocast)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.fit()
    _sync(device)
    seconds = time.perf_counter() - starts[min(args.warmup, len(starts) - 1)]
    timed_steps = trainer.state.step - min(args.warmup, trainer.state.step - 1)
    amp = resolve_amp(device, cfg.train.amp)
    peak_n = 512 if args.tiny or device.type == "cpu" else 8192
    peaks = {name: matmul_peak(device, dtype, peak_n) for name, dtype in DTYPES.items()
             if name in ("off", amp) and not (device.type == "cpu" and dtype == torch.float16)}
    steps_per_s = timed_steps / seconds
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"device": str(device), "precision": trainer.precision, "batch": batch, "image_size": size,
            "steps": timed_steps, "pairs_per_s": steps_per_s * batch, "step_gflop": flops / 1e9,
            "peak_tflops": {("fp32" if k == "off" else k): v / 1e12 for k, v in peaks.items()},
            "mfu": flops * steps_per_s / peaks[amp], "peak_memory_gb": memory / 1e9}


def report(r: dict) -> list[str]:
    peaks = ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in r["peak_tflops"].items())
    return [f"device {r['device']} ({r['precision']}), batch {r['batch']} at {r['image_size']} px, "
            f"{r['steps']} timed steps",
            f"pairs/s: {r['pairs_per_s']:.1f}",
            f"MFU: {100 * r['mfu']:.1f}% ({r['step_gflop']:.3g} GFLOP per step; matmul peak measured: {peaks})",
            f"peak memory: {r['peak_memory_gb']:.2f} GB"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, --tiny: 1)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (default 128, --tiny: 16)")
    p.add_argument("--image-size", type=int, default=None, help="view size (default: the preset's 224)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", help="auto | off | fp16 | bf16 (train.amp)")
    p.add_argument("--tiny", action="store_true", help="a tiny CNN on 16 px images: a smoke test in seconds")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config override")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 10)
    args.batch_size = args.batch_size or (16 if args.tiny else 128)
    result = run(args)
    for line in report(result):
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

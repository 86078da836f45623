"""Where a BYOL training step's time goes on this machine, and what the convolutions alone could reach.

For each setting (the same ones as throughput.py) it prints:
  1. phase times per step (medians over alternating repetitions): views, forward (online + target, both
     views), backward, optimizer, EMA; each phase's share of the step;
  2. torch.profiler self-CPU time grouped by kind of op (convolution, matmul, batch norm, elementwise,
     optimizer, copies/allocation, view ops), with the top ops;
  3. the convolution ceiling: every distinct convolution of the backbone timed alone (forward, and
     forward + input and weight gradients, channels_last), so the flop-weighted GFLOP/s of the network's
     convolutions, and therefore the best MFU the step could reach if everything else were free;
all against the fp32 matmul peak measured in the same run.

    python benchmarks/profile_step.py                       # both settings
    python benchmarks/profile_step.py --only resnet18-cifar --reps 3
    python benchmarks/profile_step.py --only demo --only folder-32 --reps 5   # the CPU presets' steps
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import StepParts, matmul_peak  # noqa: E402

from byol.runtime import tune_malloc  # noqa: E402

GROUPS = [  # (group, substrings of aten op names), first match wins
    ("convolution", ("conv", "mkldnn_convolution")),
    ("matmul", ("addmm", "aten::mm", "matmul", "bmm", "linear")),
    ("batch norm", ("batch_norm",)),
    ("optimizer (foreach)", ("_foreach",)),
    ("views (grid_sample, pad, index)", ("grid_sampler", "reflection_pad", "index", "nonzero")),
    ("copies / allocation", ("copy_", "_to_copy", "empty", "fill_", "zero_", "clone", "contiguous")),
    ("elementwise / reductions", ("relu", "threshold", "add", "mul", "sub", "div", "clamp", "sum", "mean", "norm",
                                  "sqrt", "pow", "where", "neg", "abs", "amax", "amin", "sign", "floor", "minimum",
                                  "maximum", "exp", "rsqrt", "lerp", "max_pool", "avg_pool", "adaptive")),
]


def _group(name: str) -> str:
    for g, keys in GROUPS:
        if any(k in name for k in keys):
            return g
    return "other"


def phases(sp: StepParts, reps: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each phase."""
    sp.step()  # warm-up
    acc: dict[str, list[float]] = defaultdict(list)
    for _ in range(reps):
        tot: dict[str, float] = defaultdict(float)
        for k in range(steps):
            t0 = time.perf_counter()
            v1, v2 = sp.views()
            t1 = time.perf_counter()
            loss = sp.forward(v1, v2)
            t2 = time.perf_counter()
            sp.backward(loss)
            t3 = time.perf_counter()
            sp.optimizer()
            t4 = time.perf_counter()
            sp.ema(k)
            t5 = time.perf_counter()
            for name, dt in (("views", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3),
                             ("ema", t5 - t4)):
                tot[name] += dt
        for name, v in tot.items():
            acc[name].append(v / steps)
    return {name: statistics.median(v) for name, v in acc.items()}


def op_groups(sp: StepParts, steps: int) -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """Self-CPU seconds per step by group, and the top ops (name, seconds per step, calls per step)."""
    sp.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(steps):
            sp.step(k)
    groups: dict[str, float] = defaultdict(float)
    ops = []
    for e in prof.key_averages():
        s = e.self_cpu_time_total / 1e6 / steps
        groups[_group(e.key)] += s
        ops.append((e.key, s, e.count // steps))
    ops.sort(key=lambda r: -r[1])
    return dict(groups), ops[:12]


def conv_ceiling(sp: StepParts, reps: int) -> dict[str, float]:
    """Time each distinct convolution of the online encoder alone at the step's batch (one view)."""
    shapes: dict[tuple, int] = {}
    hooks = []

    def hook(mod: nn.Conv2d, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        key = (tuple(inp[0].shape), mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
               mod.groups)
        shapes[key] = shapes.get(key, 0) + 1

    for m in sp.method.encoder.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        sp.method.encoder(sp.views()[0])
    for h in hooks:
        h.remove()
    fwd_t = fb_t = flops = fb_flops = 0.0
    for (shape, cin, cout, k, stride, pad, groups), count in shapes.items():
        conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False).to(memory_format=torch.channels_last)
        first = cin == sp.channels  # the stem reads the images: no input gradient in training
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(not first)
        with torch.no_grad():
            y = conv(x)
        f = 2 * y.numel() * (cin // groups) * k[0] * k[1]  # multiply-adds x2, forward
        g = torch.randn_like(y)
        tf, tb = [], []
        for _ in range(reps + 1):
            t = time.perf_counter()
            with torch.no_grad():
                conv(x)
            tf.append(time.perf_counter() - t)
            t = time.perf_counter()
            conv(x).backward(g)
            tb.append(time.perf_counter() - t)
        fwd_t += count * statistics.median(tf[1:])
        fb_t += count * statistics.median(tb[1:])
        flops += count * f
        fb_flops += count * f * (2 if first else 3)
    return {"fwd_gflops": flops / fwd_t / 1e9, "fwdbwd_gflops": fb_flops / fb_t / 1e9, "distinct": len(shapes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=["demo", "folder-32", "folder-64", "resnet18-cifar"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--amp", choices=["off", "bf16"], default="off", help="autocast of the forward (default fp32)")
    a = ap.parse_args()
    tuned = tune_malloc()  # as the CLI does (BYOL_MALLOC=glibc keeps glibc's defaults)
    if a.threads:
        torch.set_num_threads(a.threads)
    dt = torch.bfloat16 if a.amp == "bf16" else torch.float32
    peak = matmul_peak(dtype=dt)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {str(dt)[6:]} matmul peak {peak:.1f} GFLOP/s; "
          f"malloc {'keeps freed memory' if tuned else 'glibc defaults'}")
    for name in a.only or ["demo", "resnet18-cifar"]:
        sp = StepParts(name, a.amp)
        steps = 1 if name == "resnet18-cifar" else 10
        fpp = sp.flops_per_pair()
        ph = phases(sp, a.reps, steps)
        total = sum(ph.values())
        rate = sp.batch / total
        print(f"\n== {name}: batch {sp.batch}, {fpp / 1e9:.4f} GFLOP/pair; {rate:.1f} pairs/s, "
              f"{fpp * rate / 1e9:.1f} GFLOP/s, MFU {fpp * rate / 1e9 / peak:.2f}")
        print("phase        ms/step   share")
        for k, v in ph.items():
            print(f"{k:10s} {1e3 * v:9.2f} {100 * v / total:6.1f}%")
        groups, top = op_groups(sp, steps)
        gt = sum(groups.values())
        print("op group (profiler self CPU)         ms/step   share")
        for k, v in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"{k:35s} {1e3 * v:8.2f} {100 * v / gt:6.1f}%")
        print("top ops: " + "; ".join(f"{n} {1e3 * s:.1f} ms x{c}" for n, s, c in top))
        if a.amp != "off":
            continue  # the convolution ceiling is measured in fp32
        cc = conv_ceiling(sp, a.reps)
        ceil_mfu = cc["fwdbwd_gflops"] / peak
        print(f"convolutions alone ({cc['distinct']} distinct shapes, channels_last, batch {sp.batch}): "
              f"forward {cc['fwd_gflops']:.1f} GFLOP/s (MFU {cc['fwd_gflops'] / peak:.2f}), forward+backward "
              f"{cc['fwdbwd_gflops']:.1f} GFLOP/s (MFU {ceil_mfu:.2f}): the step's MFU cannot exceed about this "
              f"while its convolutions run at these speeds")


if __name__ == "__main__":
    sys.exit(main())

"""Peak resident memory of a BYOL training step, per setting, batch size and precision.

Each configuration runs in a fresh process (so ``ru_maxrss`` is its own peak): build the method and
optimizer, make the views, run 2 full steps (views, forward, backward, optimizer, EMA), report the peak
RSS. A straight line through the batch sizes gives ``peak ~ fixed + per_pair * batch``: the fixed part
is the interpreter, torch, the weights of online and target networks and the optimizer state; the
per-pair part is mostly the activations kept for the backward pass of both views. Use it to bound the
memory of a batch size before trying it.

    python benchmarks/memory.py                          # demo and ResNet-18, several batches, fp32
    python benchmarks/memory.py --only resnet18-cifar --batches 64 128 256 --amp bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(name: str, batch: int, amp: str) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from throughput import StepParts

    from byol.runtime import malloc_mode, tune_malloc

    tune_malloc()  # as the CLI does: freed memory stays in the process unless BYOL_MALLOC=glibc
    torch.set_num_threads(2)
    sp = StepParts(name, amp, batch)
    for k in range(2):
        sp.step(k)
    print(json.dumps({"setting": name, "batch": batch, "amp": amp, "malloc": malloc_mode(),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def fit(rows: list[dict]) -> tuple[float, float]:
    """Least-squares line peak = a + b * batch."""
    xs = [r["batch"] for r in rows]
    ys = [r["peak_rss_mb"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
    return my - b * mx, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=["demo", "resnet18-cifar"])
    ap.add_argument("--batches", type=int, nargs="+", default=None,
                    help="batch sizes (default: demo 64 128 256 512, ResNet-18 64 128 256)")
    ap.add_argument("--amp", choices=["off", "bf16"], default="off")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.child[2])
        return 0
    for name in a.only or ["demo", "resnet18-cifar"]:
        batches = a.batches or ([64, 128, 256, 512] if name == "demo" else [64, 128, 256])
        rows = []
        for b in batches:
            out = subprocess.run([sys.executable, __file__, "--child", name, str(b), a.amp], capture_output=True,
                                 text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{name:15s} {a.amp:4s} batch {b:4d}: peak RSS {rows[-1]['peak_rss_mb']:8.1f} MB", flush=True)
        if len(rows) > 1:
            c0, c1 = fit(rows)
            print(f"{name:15s} {a.amp:4s} peak RSS ~ {c0:.0f} MB + {c1:.2f} MB x batch", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

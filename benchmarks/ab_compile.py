"""torch.compile of the backbone against eager, alternating in one process (issue 23 item 3).

Two copies of one setting's step (throughput.py's ``StepParts``: views, forward of online and target on both
views, backward, optimizer, EMA), one with its online and target encoders wrapped in ``torch.compile``, timed in
alternating order (5 rounds x 15 steps); MFU against the matmul peak of the step's precision measured in the
same run. One thread by default, so that a run beside other work measures one core against one core.

    python benchmarks/ab_compile.py --setting folder-32 --amp off
    python benchmarks/ab_compile.py --setting demo --amp bf16 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import StepParts, matmul_peak  # noqa: E402  (benchmarks/throughput.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=["demo", "folder-32", "folder-64", "resnet18-cifar"], default="folder-32")
    ap.add_argument("--amp", choices=["off", "bf16"], default="off")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    peak = matmul_peak(dtype=torch.bfloat16 if a.amp == "bf16" else torch.float32)
    eager, comp = StepParts(a.setting, a.amp), StepParts(a.setting, a.amp)
    fpp = eager.flops_per_pair()
    t = time.perf_counter()
    comp.method.encoder = torch.compile(comp.method.encoder)
    if hasattr(comp.method, "target_encoder"):
        comp.method.target_encoder = torch.compile(comp.method.target_encoder)
    comp.step(0), comp.step(1)
    print(f"{a.setting}, {a.amp}, {a.threads} thread(s): compile + 2 steps {time.perf_counter() - t:.1f} s", flush=True)
    eager.step(0)
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    pairs = (("eager", eager), ("compiled", comp))
    for r in range(a.rounds):
        for name, sp in pairs if r % 2 == 0 else pairs[::-1]:
            t = time.perf_counter()
            for i in range(a.steps):
                sp.step(i)
            rates[name].append(a.steps * sp.batch / (time.perf_counter() - t))
    for name, v in rates.items():
        m = statistics.median(v)
        print(f"  {name:9s} {m:8.1f} pairs/s ({min(v):.0f}-{max(v):.0f})  MFU {m * fpp / 1e9 / peak:.3f} "
              f"(peak {peak:.0f} GFLOP/s, {fpp / 1e9:.4f} GFLOP/pair)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""In-process A/B of the model step: byol vs lightly's blocks vs byol-pytorch, alternating in ONE process.

peers.py runs every contender in its own process; on this virtual machine that placement alone moves a
median by up to ~16% in either direction. Here the steps (same pre-made views, same model, same optimizer;
peers.py's ``StepBench``) alternate in rotating order inside one process, which is the controlled comparison
that RESULTS.md section 2 quotes. Needs the peers environment:

    bash benchmarks/setup_peers.sh
    .venv-peers/bin/python benchmarks/ab_step.py --setting demo --reps 6 --steps 25
    .venv-peers/bin/python benchmarks/ab_step.py --setting resnet18-cifar --batch 256 --reps 4 --steps 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import StepBench  # noqa: E402  (benchmarks/peers.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=["demo", "resnet18-cifar"], default="demo")
    ap.add_argument("--batch", type=int, default=None, help="default: 128 (demo), 256 (resnet18-cifar)")
    ap.add_argument("--impls", nargs="+", default=["byol", "lightly", "byol-pytorch"])
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--steps", type=int, default=25, help="steps per measurement")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    batch = a.batch or (128 if a.setting == "demo" else 256)
    benches = {k: StepBench(k, a.setting, batch) for k in a.impls}
    rates: dict[str, list[float]] = {k: [] for k in benches}
    names = list(benches)
    for rep in range(a.reps):
        for k in names[rep % len(names):] + names[: rep % len(names)]:
            b = benches[k]
            b._unit()  # one untimed step after the switch
            t = time.perf_counter()
            for _ in range(a.steps):
                b._unit()
            rates[k].append(a.steps * batch / (time.perf_counter() - t))
    print(f"{a.setting}, batch {batch}, {a.threads} threads, {a.reps} rounds x {a.steps} steps, rotating order:")
    for k, r in rates.items():
        print(f"  {k:14s} median {statistics.median(r):9.1f} pairs/s   per round {', '.join(f'{x:.1f}' for x in r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

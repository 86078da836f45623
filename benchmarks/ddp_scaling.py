"""1 process against 2 processes (torchrun, gloo, DDP) on this machine, and the communication per step.

Runs the same short pretraining twice, alternating, on the same cores: one process with all threads, then
``torchrun --nproc_per_node=P`` with the threads split between the processes (the global batch is the
same, so each process computes half of it). Throughput is the median ``pairs_per_s`` of the logged windows
after the first (start-up excluded). The communication volume is counted, not measured: DDP all-reduces
every trainable parameter's gradient once per step (a ring all-reduce sends ``2 (P-1)/P`` times the buffer
per process), cross-replica BN all-reduces 2 statistics per channel of every BN forward (many small messages), and the
loss / collapse statistics a few scalars.

    python benchmarks/ddp_scaling.py --config fashion-mnist --steps 150 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def _count(config: str) -> tuple[int, int]:
    """(trainable parameters, BN channels of the online and target networks) of the preset's method."""
    from byol.config import find_preset
    from byol.train.config import build_config
    from byol.methods import build_method
    from byol.models.factory import backbone_factory

    cfg = build_config(files=[find_preset(config)])
    method = build_method(cfg.method, backbone_factory(cfg.model, in_channels=1))
    params = sum(p.numel() for m in method.trainable_modules() for p in m.parameters() if p.requires_grad)
    bn = sum(m.num_features for m in method.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    return params, bn


def _run(procs: int, threads: int, args: argparse.Namespace, out: Path) -> float:
    common = ["pretrain", "--config", args.config, "--run-dir", str(out), "--threads", str(threads),
              "--set", "train.budget=null", "--set", f"train.epochs={args.steps / args.steps_per_epoch}",
              "--set", "train.knn_every=0", "--set", "train.verdict=false", "--set", "train.progress=false",
              "--set", "train.log_every=25"]
    if procs == 1:
        cmd = [sys.executable, "-m", "byol.cli.main", *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
               str(29500 + os.getpid() % 1000), "-m", "byol.cli.main", *common]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rates = [json.loads(line)["pairs_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"pairs_per_s"' in line]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="fashion-mnist")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--steps-per-epoch", type=int, default=468)  # fashion-mnist at batch 128
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    params, bn = _count(args.config)
    p = args.procs
    grad_mb = params * 4 / 2**20
    print(f"trainable parameters {params:,} ({grad_mb:.2f} MB fp32 gradients); BN channels {bn:,}")
    print(f"per step and process with {p} processes: gradient all-reduce sends {2 * (p - 1) / p * grad_mb:.2f} MB; "
          f"cross-replica BN about {2 * bn * 4 * 2 / 2**10:.1f} KB of statistics (mean and variance of every "
          f"BN channel of online and target, both views), in many small all-reduces")
    results: dict[int, list[float]] = {1: [], p: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for procs in ((1, p) if r % 2 == 0 else (p, 1)):
                rate = _run(procs, max(1, cores // procs), args, Path(tmp) / f"r{r}-p{procs}")
                results[procs].append(rate)
                print(f"repeat {r}: {procs} process(es) x {max(1, cores // procs)} threads: {rate:.0f} pairs/s", flush=True)
    one, many = statistics.median(results[1]), statistics.median(results[p])
    print(f"median: 1 process {one:.0f} pairs/s, {p} processes {many:.0f} pairs/s: ratio {many / one:.2f}")


if __name__ == "__main__":
    main()

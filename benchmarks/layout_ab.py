"""Memory layout A/Bs, alternating in one process (RESULTS.md sections 5 and 10).

1. ``step``: the fp32 training step with the model and views in channels_last (byol's default) vs NCHW,
   for the demo preset and for ResNet-18 (throughput.py's ``StepParts``);
2. ``features``: feature extraction of the demo encoder (10,000 images, batch 512) with the weights switched
   to channels_last for the call (``byol.eval.features.channels_last_weights``, the default) vs left NCHW.

    .venv/bin/python benchmarks/layout_ab.py                 # both
    .venv/bin/python benchmarks/layout_ab.py --only features
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import byol.eval.features as features  # noqa: E402
from byol.config import find_preset  # noqa: E402
from byol.models.factory import build_encoder  # noqa: E402
from byol.train.config import build_config  # noqa: E402
from byol.optim.optimizers import build_optimizer  # noqa: E402
from throughput import StepParts  # noqa: E402  (benchmarks/throughput.py)


def step_ab(name: str, reps: int, steps: int) -> None:
    a = StepParts(name)  # channels_last
    b = StepParts(name)
    b.method = b.method.to(memory_format=torch.contiguous_format)
    b.views = lambda: tuple(v.contiguous() for v in b.aug(b.x, b.g))
    o = b.cfg.optim
    b.opt = build_optimizer(o.name, b.method.trainable_modules(), lr=0.1, weight_decay=o.weight_decay,
                            momentum=o.momentum, eta=o.eta)
    for sp in (a, b):
        sp.step()
    r: dict[str, list[float]] = {"channels_last": [], "NCHW": []}
    pairs = [("channels_last", a), ("NCHW", b)]
    for rep in range(reps):
        for label, sp in (pairs if rep % 2 == 0 else pairs[::-1]):
            t = time.perf_counter()
            for k in range(steps):
                sp.step(k)
            r[label].append(sp.batch * steps / (time.perf_counter() - t))
    print(f"step, {name}, batch {a.batch}: " + ", ".join(
        f"{k} {statistics.median(v):.1f} pairs/s" for k, v in r.items()))


def features_ab(reps: int) -> None:
    cfg = build_config(files=[find_preset("fashion-mnist")])
    torch.manual_seed(0)
    enc = build_encoder(cfg.model, 1)
    x = torch.randint(0, 256, (10000, 1, 28, 28), dtype=torch.uint8)
    kw = dict(size=28, mean=[0.286], std=[0.353], batch_size=512)
    default = features.channels_last_weights
    r: dict[str, list[float]] = {"channels_last weights": [], "NCHW weights": []}
    try:
        for _ in range(reps):
            for label in r:
                features.channels_last_weights = default if label.startswith("channels") else contextlib.nullcontext
                t = time.perf_counter()
                features.extract_features(enc, x, **kw)
                r[label].append(10000 / (time.perf_counter() - t))
    finally:
        features.channels_last_weights = default
    print("features, demo encoder, 10k x 28 px: " + ", ".join(
        f"{k} {statistics.median(v):,.0f} images/s" for k, v in r.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["step", "features"], default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.only in (None, "features"):
        features_ab(5)
    if a.only in (None, "step"):
        step_ab("demo", 6, 20)
        step_ab("resnet18-cifar", 4, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

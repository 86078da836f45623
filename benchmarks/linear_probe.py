"""The demo's linear probes (L-BFGS logistic regression, default l2 grid + refit) on Fashion-MNIST:
loss evaluations and seconds with and without the PCA basis (`byol.eval.linear.pca_basis`), and the
three probes of `byol demo` one after another (2 threads) against side by side (one thread each).

    python benchmarks/linear_probe.py [--checkpoint RUN_DIR]    # RUN_DIR: a Fashion-MNIST run (e.g. runs/demo)

Evaluation counts do not depend on what else runs on the machine; seconds do (run it alone).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import byol.eval.linear as lin
from byol.data import load_images
from byol.eval.compare import run_side_by_side
from byol.eval.features import extract_features


def counted(fn):
    """Run ``fn()``, counting the L-BFGS loss evaluations inside it."""
    calls = [0]
    step = torch.optim.LBFGS.step

    def wrapped(self, closure):
        def c():
            calls[0] += 1
            return closure()
        return step(self, c)

    torch.optim.LBFGS.step = wrapped
    try:
        t = time.perf_counter()
        out = fn()
        return out, calls[0], time.perf_counter() - t
    finally:
        torch.optim.LBFGS.step = step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None, help="a Fashion-MNIST run directory: its encoder's features too")
    a = ap.parse_args()
    tr = load_images("fashion-mnist", "train", progress=False)
    te = load_images("fashion-mnist", "test", progress=False)
    sets = {"raw pixels": (torch.as_tensor(tr.images).reshape(len(tr), -1).float() / 255,
                           torch.as_tensor(te.images).reshape(len(te), -1).float() / 255)}
    if a.checkpoint:
        from byol.run.files import load_encoder
        enc, cfg = load_encoder(Path(a.checkpoint))
        kw = dict(size=28, mean=cfg["data"]["mean"], std=cfg["data"]["std"])
        sets["encoder"] = tuple(extract_features(enc, torch.as_tensor(s.images), **kw) for s in (tr, te))
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads")
    torch.set_num_threads(1)
    for name, (ftr, fte) in sets.items():
        for pca in (False, True):
            cap = lin.PCA_MAX_DIM
            lin.PCA_MAX_DIM = cap if pca else 0
            try:
                res, n, s = counted(lambda: lin.linear_eval(ftr, tr.labels, fte, te.labels))
            finally:
                lin.PCA_MAX_DIM = cap
            print(f"{name:10s} {ftr.shape[1]:4d}-d  PCA basis {'on ' if pca else 'off'}  {n:5d} loss evaluations"
                  f"  {s:6.1f} s (1 thread)  top-1 {res['top1']:.2f}  l2 {res['l2']:g}")
    torch.set_num_threads(threads)
    jobs = {name: (lambda f=f: lin.linear_eval(f[0], tr.labels, f[1], te.labels)["top1"]) for name, f in sets.items()}
    t = time.perf_counter()
    seq = {name: job() for name, job in jobs.items()}
    t_seq = time.perf_counter() - t
    t = time.perf_counter()
    par = run_side_by_side(jobs, "cpu")
    t_par = time.perf_counter() - t
    print(f"all probes one after another ({threads} threads) {t_seq:.1f} s; side by side {t_par:.1f} s "
          f"({t_seq / t_par:.2f}x); top-1 {seq} / {par}")


if __name__ == "__main__":
    main()

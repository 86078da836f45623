"""The fused CPU view kernel against the eager torch ops (RESULTS.md section 9).

1. per-sample cost of the kernel by stage (1 thread, ops switched on one after the other, paper T);
2. ImageNet size: 256 px images -> 224 px views (23-tap blur, which the eager path runs as a grouped
   convolution), T and T', with the largest difference between the two paths.

    .venv/bin/python benchmarks/views_fused.py

The two views at 32 px, batch 256, fused vs eager alternating: ``benchmarks/throughput.py --only views``.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from byol.augment import fused, paper_views, views


def _median_ms(fn, reps: int = 7, n: int = 20) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        ts.append((time.perf_counter() - t) / n)
    return statistics.median(ts) * 1e3


def main() -> int:
    if not fused.available():
        print("the fused kernel is not available here (no C compiler?)")
        return 1
    T, T_PRIME = paper_views()
    m, s = views._mean_std((0.5,) * 3, (0.25,) * 3, 3, "cpu", torch.float32)
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)

    torch.set_num_threads(1)
    print("1. per sample and view, 1 thread, batch 256, 32 px RGB (us):")
    stages = {"crop + normalize": dict(jitter_p=0, gray_p=0, blur_p=0),
              "+ blur": dict(jitter_p=0, gray_p=0, blur_p=1.0),
              "crop + jitter without hue": dict(jitter_p=1.0, hue=0.0, gray_p=0, blur_p=0),
              "crop + full jitter": dict(jitter_p=1.0, gray_p=0, blur_p=0),
              "paper T": {}}
    for name, kw in stages.items():
        spec = T.replace(**kw)
        p = views.sample_view_params(256, 32, 32, spec, 32, torch.Generator().manual_seed(1), "cpu")
        print(f"   {name:28s} {_median_ms(lambda: fused.fused_view(x, spec, 32, m, s, p)) * 1e3 / 256:6.2f}")

    torch.set_num_threads(2)
    big = torch.randint(0, 256, (64, 3, 256, 256), dtype=torch.uint8)
    mi, si = views._mean_std((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 3, "cpu", torch.float32)
    for name, spec in (("T", T), ("T'", T_PRIME)):
        p = views.sample_view_params(64, 256, 256, spec, 224, torch.Generator().manual_seed(0), "cpu")
        te = _median_ms(lambda: views._view_from_float(views._to_float(big, torch.float32), spec, 224, mi, si, p), 3, 2)
        tf = _median_ms(lambda: fused.fused_view(big, spec, 224, mi, si, p), 3, 2)
        diff = (views._view_from_float(views._to_float(big, torch.float32), spec, 224, mi, si, p)
                - fused.fused_view(big, spec, 224, mi, si, p)).abs().max().item()
        print(f"2. {name:2s} 64 x 256 px -> 224 px, {p['blur_kernel']}-tap blur: eager {te:.0f} ms, fused {tf:.0f} ms "
              f"({te / tf:.1f}x), largest difference {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

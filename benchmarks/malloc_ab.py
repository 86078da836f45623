"""A/B of the memory allocator under a BYOL training step: byol's default vs glibc's vs tcmalloc.

Each measurement is a fresh process (the allocator is process-wide and must be set before the first large
allocation) that builds the setting's step (throughput.StepParts), runs one warm-up step, then times
``--steps`` steps and reports pairs/s (median over the steps), the CPU time spent in the kernel (system)
and in user space, the minor page faults, and the resident size at the end. Modes alternate, round by
round, in rotating order:

  keep      byol's default (byol.runtime.tune_malloc: glibc with M_MMAP_MAX=0 and no trimming)
  glibc     glibc's defaults (BYOL_MALLOC=glibc)
  tcmalloc  glibc's defaults with gperftools' tcmalloc preloaded (LD_PRELOAD), when the library is found
            (Debian: apt-get install libtcmalloc-minimal4), as a reference for a caching allocator

    python benchmarks/malloc_ab.py                                   # ResNet-18 batch 256, 3 rounds
    python benchmarks/malloc_ab.py --setting demo --steps 40 --rounds 4
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(setting: str, batch: int | None, steps: int) -> None:
    from byol.runtime import tune_malloc

    applied = tune_malloc()  # honours BYOL_MALLOC, as the CLI does
    import torch

    sys.path.insert(0, str(HERE))
    from throughput import StepParts

    torch.set_num_threads(2)
    sp = StepParts(setting, batch=batch)
    sp.step()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    rates = []
    for k in range(steps):
        t = time.perf_counter()
        sp.step(k)
        rates.append(sp.batch / (time.perf_counter() - t))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    print(json.dumps({"pairs_per_s": statistics.median(rates), "kept": applied,
                      "user_s_per_step": (r1.ru_utime - r0.ru_utime) / steps,
                      "sys_s_per_step": (r1.ru_stime - r0.ru_stime) / steps,
                      "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
                      "rss_mb": rss, "peak_rss_mb": r1.ru_maxrss / 1024}))


def tcmalloc_path() -> str | None:
    for pattern in ("/usr/lib/*/libtcmalloc_minimal.so.4", "/usr/lib/*/libtcmalloc.so.4", "/usr/lib64/libtcmalloc*.so.4"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=["demo", "resnet18-cifar"], default="resnet18-cifar")
    ap.add_argument("--batch", type=int, default=None, help="default: the setting's (256 for ResNet-18, 128 demo)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.setting, a.batch, a.steps)
        return 0
    base = {k: v for k, v in os.environ.items() if k not in ("BYOL_MALLOC", "LD_PRELOAD")}
    modes = {"keep": base, "glibc": {**base, "BYOL_MALLOC": "glibc"}}
    tc = tcmalloc_path()
    if tc:
        modes["tcmalloc"] = {**base, "BYOL_MALLOC": "glibc", "LD_PRELOAD": tc}
    else:
        print("tcmalloc not found (apt-get install libtcmalloc-minimal4): measuring keep and glibc only")
    names = list(modes)
    got: dict[str, list[dict]] = {m: [] for m in names}
    cmd = [sys.executable, __file__, "--child", "--setting", a.setting, "--steps", str(a.steps)]
    if a.batch:
        cmd += ["--batch", str(a.batch)]
    for r in range(a.rounds):
        for m in names[r % len(names):] + names[:r % len(names)]:
            out = subprocess.run(cmd, env=modes[m], capture_output=True, text=True, timeout=3600)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            got[m].append(row)
            print(f"round {r + 1} {m:9s} {row['pairs_per_s']:8.1f} pairs/s  sys {row['sys_s_per_step']:6.2f} s/step  "
                  f"user {row['user_s_per_step']:6.2f} s/step  faults {row['minor_faults_per_step']:10.0f}/step  "
                  f"RSS {row['rss_mb']:6.0f} MB", flush=True)
    print(f"\n{a.setting}, batch {a.batch or 'default'}, {a.steps} steps per process, medians over {a.rounds} processes:")
    print("| allocator | pairs/s | vs glibc | system CPU s/step | user CPU s/step | minor faults/step | RSS MB |")
    print("|---|---|---|---|---|---|---|")
    g = statistics.median(x["pairs_per_s"] for x in got["glibc"])
    for m in names:
        med = {k: statistics.median(x[k] for x in got[m]) for k in got[m][0] if k != "kept"}
        print(f"| {m} | {med['pairs_per_s']:.1f} | {med['pairs_per_s'] / g:.2f}x | {med['sys_s_per_step']:.2f} | "
              f"{med['user_s_per_step']:.2f} | {med['minor_faults_per_step']:,.0f} | {med['rss_mb']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

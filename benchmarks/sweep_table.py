"""Render benchmarks/sweep_fmnist.jsonl as the Markdown table in docs/sweeps.md.

    python benchmarks/sweep_table.py [benchmarks/sweep_fmnist.jsonl]
"""

import json
import sys

COLS = [("tag", "run"), ("bb", "model"), ("widths", "widths"), ("width", "width"), ("size", "px"), ("bs", "batch"),
        ("opt", "opt"), ("lr", "base lr"), ("wd", "wd"), ("tau", "tau_base"), ("scale", "crop min"),
        ("blur1", "blur T"), ("blur2", "blur T'"), ("pdim", "proj dim"), ("warm", "warmup (share of run)"),
        ("epochs", "epochs"), ("seed", "seed"),
        ("pairs_s", "pairs/s"), ("train_s", "s"),
        ("knn", "kNN %"), ("lin", "linear %"), ("score", "scored on")]


def main(path: str = "benchmarks/sweep_fmnist.jsonl") -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| " + " | ".join(h for _, h in COLS) + " |")
    print("|" + "---|" * len(COLS))
    for r in rows:
        cells = []
        for k, _ in COLS:
            # rows before 2026-12-01 were scored on test; rows before --seed existed used seed 0
            v = r.get(k, {"score": "test", "seed": 0}.get(k, ""))
            if k == "widths" and r.get("bb") != "convnet":
                v = "-"
            if k == "widths" and r.get("convs"):
                v = f"{v} x{r['convs']}"
            cells.append(str(v))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])

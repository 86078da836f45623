"""One process of a multi-process test run, started by tests/train/test_distributed.py with torchrun's environment
(MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK).

``python ddp_worker.py OUT_DIR RUN_DIR OVERRIDES_JSON``: pretrains the tiny preset with the overrides in
RUN_DIR through :func:`byol.train.pretrain.run_pretrain`, then writes (outside RUN_DIR) ``rankR.pt``, the method's
state on this rank, and ``rankR.json``, every file-system write this process made inside RUN_DIR (seen by
an audit hook), its summary's steps and stop reason.
"""

import json
import os
import sys
from pathlib import Path

out, run_dir, overrides = Path(sys.argv[1]), Path(sys.argv[2]).resolve(), json.loads(sys.argv[3])
writes: list[str] = []
_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.link", "os.symlink", "shutil.rmtree"}


def _audit(event: str, args: tuple) -> None:
    """Record every write under RUN_DIR: opened for writing, created, renamed or removed."""
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    elif event in _WRITE_EVENTS:
        path, writing = args[0], True
    else:
        return
    if writing and isinstance(path, (str, bytes, os.PathLike)):
        p = Path(os.fsdecode(path)).resolve()
        if p == run_dir or run_dir in p.parents:
            writes.append(f"{event} {p}")


sys.addaudithook(_audit)

import torch  # noqa: E402

from byol.config import find_preset  # noqa: E402
from byol.train.config import build_config  # noqa: E402
from byol.train.pretrain import run_pretrain  # noqa: E402

rank = int(os.environ["RANK"])
cfg = build_config(files=[find_preset("tiny")], overrides=overrides)
summary = run_pretrain(cfg, run_dir)
torch.save(summary["method"].state_dict(), out / f"rank{rank}.pt")
(out / f"rank{rank}.json").write_text(json.dumps({"writes": writes, "steps": summary["steps"],
                                                  "stop_reason": summary["stop_reason"],
                                                  "history": summary["history"]}))

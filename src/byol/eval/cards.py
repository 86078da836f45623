"""Results cards: one JSON file per evaluation, written into the evaluation's output directory.

A card says what was measured and how, so a number can be traced afterwards and tables can be built
from run directories (``byol report``). This module is the one place that writes cards and reads
them back (:func:`collect_cards`); it imports neither torch nor anything that does, so reading
cards stays fast. Fields (all written by :func:`make_card`)::

    schema       "byol.eval-card/1"
    protocol     "linear" | "linear-sgd" | "knn" | "finetune" | "transfer-linear" | "transfer-finetune"
    metrics      {"top1": .., "top5": .., ...}  (percent; kNN: {"k20": .., "k200": ..})
    baseline     optional: {"name": "scratch", "metrics": {...}, ...}  (fine-tune: supervised from scratch)
    dataset      evaluated data set (name or folder path); "source_dataset" the pretraining one
    splits       sizes: {"train": n, "val": n, "test": n, ...} and how the test split was obtained
    hyperparameters  what was chosen (e.g. l2, lr) and the grid it was chosen from
    encoder      {"kind": "checkpoint" | "random-init" | "torchvision", "path", "sha256_1mb", "backbone"}
    label_subset path of the label-subset JSON (fine-tune), else null
    seed, timing {"seconds": .., ...}, conversion (the input-adaptation message), byol version, time
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from byol.atomic import atomic_write
from byol.errors import ByolError

__all__ = ["CARD_SCHEMA", "card_filename", "card_files", "collect_cards", "make_card", "read_card", "remove_cards", "write_card"]

CARD_SCHEMA = "byol.eval-card/1"


def card_filename(protocol: str, dataset: str, tag: str = "") -> str:
    name = Path(dataset.rstrip("/")).name if ("/" in dataset or os.sep in dataset) else dataset
    parts = [protocol, name] + ([tag] if tag else [])
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", "-".join(parts)) + ".json"


def make_card(
    *,
    protocol: str,
    metrics: dict[str, float],
    dataset: str,
    splits: dict[str, Any],
    hyperparameters: dict[str, Any],
    encoder: dict[str, Any],
    seed: int,
    timing: dict[str, float],
    label_subset: str | None = None,
    baseline: dict[str, Any] | None = None,
    conversion: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    from byol import __version__

    return {
        "schema": CARD_SCHEMA,
        "protocol": protocol,
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "baseline": baseline,
        "dataset": dataset,
        "splits": splits,
        "hyperparameters": hyperparameters,
        "encoder": encoder,
        "label_subset": label_subset,
        "seed": int(seed),
        "timing": {k: round(float(v), 2) for k, v in timing.items()},
        "conversion": conversion,
        "byol_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }


def write_card(out_dir: str | Path, card: dict[str, Any], filename: str) -> Path:
    """Write ``card`` as ``out_dir/filename`` (atomically: :func:`byol.atomic.atomic_write`)."""
    return atomic_write(Path(out_dir) / filename, json.dumps(card, indent=2, default=str))


def read_card(path: str | Path) -> dict[str, Any] | None:
    """The card in ``path``, or ``None`` for an unreadable file or JSON that is not a card of :data:`CARD_SCHEMA`."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("schema") == CARD_SCHEMA else None


def card_files(run_dir: str | Path) -> list[Path]:
    """Candidate card files of a run directory: every ``*.json`` under ``run_dir/eval/`` (recursively, so
    ``--out-dir`` sub-folders count too) except the feature cache's; a directory that is not a run
    directory is searched as it is."""
    run_dir = Path(run_dir)
    root = run_dir / "eval" if (run_dir / "eval").is_dir() else run_dir
    return sorted(p for p in root.rglob("*.json") if "features" not in p.relative_to(root).parts)


def remove_cards(run_dir: str | Path) -> None:
    """Delete the cards under ``run_dir/eval/`` and the label-subset file each fine-tuning card wrote beside
    it (``labels-<card>-seed<N>.json``): they describe an encoder that a new run in ``run_dir`` replaces, and
    ``byol report`` would show them as the new run's. Other files (a user's, the feature cache, whose
    entries are keyed by the checkpoint's fingerprint and so never match the new weights) stay."""
    if not (Path(run_dir) / "eval").is_dir():
        return
    for f in card_files(run_dir):
        if read_card(f) is not None:
            for subset in f.parent.glob(f"labels-{glob.escape(f.stem)}-seed*.json"):
                subset.unlink(missing_ok=True)
            f.unlink(missing_ok=True)


def collect_cards(run_dirs: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """``[(run name, card), ...]`` for every card found; a missing directory is a :class:`ByolError`."""
    out = []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise ByolError(f"{d} is not a directory (pass run directories, e.g. runs/fm1)")
        for f in card_files(d):
            card = read_card(f)
            if card is not None:
                out.append((d.name or str(d), card))
    return out

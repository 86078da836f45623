"""``byol embed``: frozen features of one split to ``.npy`` with an ``index,path,label`` ``.csv`` beside it
(not a protocol: nothing is fitted or scored, no card)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from byol.atomic import atomic_write

if TYPE_CHECKING:
    from byol.eval.context import EvalContext

__all__ = ["write_embedding"]


def write_embedding(ctx: EvalContext, out: str | Path) -> tuple[Path, Path, tuple[int, ...]]:
    """Frozen features of the context's one split to ``out`` (``.npy``, suffix added if missing) and
    ``index,path,label`` rows to a ``.csv`` beside it; returns both paths and the features' shape."""
    import numpy as np

    from byol.eval.features import extract_features

    images = ctx.data.train
    feats = extract_features(ctx.source.encoder, ctx.images("train"), size=ctx.plan.size, mean=list(ctx.plan.mean),
                             std=list(ctx.plan.std), batch_size=ctx.batch_size, device=ctx.device)
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    atomic_write(out, lambda f: np.save(f, feats.numpy()))
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["index", "path", "label"])
    for i in range(len(images)):
        label = ""
        if images.labels is not None:
            y = int(images.labels[i])
            label = images.classes[y] if images.classes else str(y)
        w.writerow([i, images.paths[i] if images.paths is not None else "", label])
    csv_path = atomic_write(out.with_suffix(".csv"), rows.getvalue())
    return out, csv_path, tuple(feats.shape)

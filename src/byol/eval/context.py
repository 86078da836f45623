"""One prepared evaluation: the encoder, the data, how the images are fitted to the encoder, where
results and cached features go, on which device. Every ``byol eval`` protocol and ``byol embed``
start from :func:`prepare`, so the set-up (and its defaults) exists once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from byol.errors import ConfigError
from byol.eval.data import DataOptions, EvalData, load_eval_data, load_split, plan_for, probe_channels
from byol.eval.encoders import EncoderSource, SourceSpec, load_source
from byol.eval.adapt import Adaptation

__all__ = ["EvalContext", "default_out_dir", "prepare"]


def default_out_dir(src: EncoderSource) -> Path:
    """``RUN_DIR/eval`` for a run's encoder, else ``runs/baselines/<kind>-<backbone>[-w<width>]/eval``."""
    if src.run_dir is not None:
        return src.run_dir / "eval"
    if src.kind == "raw-pixels":
        return Path("runs") / "baselines" / "raw-pixels" / "eval"
    width = src.meta.get("width", 1)
    name = src.ident.split(":")[0] + "-" + src.meta["name"] + ("" if width == 1 else f"-w{width:g}")
    return Path("runs") / "baselines" / name / "eval"


@dataclass
class EvalContext:
    """Everything an evaluation command needs, prepared once by :func:`prepare`."""

    source: EncoderSource
    data: EvalData
    plan: Adaptation  #: channel conversion, input size and normalisation for the encoder
    device: torch.device
    out_dir: Path  #: where cards and label-subset files go
    feature_cache_dir: Path | None  #: frozen-feature cache (None: no cache)
    seed: int
    batch_size: int  #: feature-extraction batch size
    test_fraction: float
    started: float = 0.0  #: ``time.perf_counter()`` when the set-up began (the cards' total ``seconds``)
    #: "" or "bn-recalibrated": the random-init floor's variant (:meth:`recalibrated`), a tag of every card
    variant: str = ""

    def input_message(self, transfer: bool = False) -> str | None:
        """The line announcing the input adaptation: always for a transfer, else only when it changes something."""
        if not (transfer or self.plan.changes):
            return None
        return ("transfer: " if transfer else "input: ") + self.plan.message(self.data.name)

    def images(self, split: str = "train") -> Tensor:
        """The ``train`` or ``test`` images, channel-converted for the encoder (uint8)."""
        data = self.data.train if split == "train" else self.data.test
        return self.plan.apply(torch.as_tensor(data.images))

    def labeled(self, split: str = "train") -> tuple[Tensor, Tensor]:
        """``(images, int64 labels)`` of ``split`` (images as :meth:`images`)."""
        data = self.data.train if split == "train" else self.data.test
        return self.images(split), torch.as_tensor(data.labels)

    def features(self) -> tuple[Tensor, Tensor, int]:
        """Frozen train and test features (from the cache when possible) and how many came from it."""
        from byol.eval.feature_cache import features_for

        kind = self.data.test_kind
        extra = {"channel_op": self.plan.channel_op, "test": kind,
                 "test_fraction": self.test_fraction if kind == "carved" else None}
        out, hits = [], 0
        for split in ("train", "test"):
            f, hit = features_for(self.source.encoder, self.images(split), cache_dir=self.feature_cache_dir,
                                  encoder_id=self.source.ident, dataset=self.data.key, split=split,
                                  size=self.plan.size, mean=self.plan.mean, std=self.plan.std, extra=extra,
                                  batch_size=self.batch_size, device=self.device)
            out.append(f)
            hits += hit
        return out[0], out[1], hits

    def splits(self, **more: Any) -> dict[str, Any]:
        """The card's ``splits``: train/test sizes, where the test split came from, and ``more``."""
        return {"train": len(self.data.train), "test": len(self.data.test), "test_from": self.data.test_note, **more}

    def card(self, protocol: str, *, metrics: dict[str, float], hyperparameters: dict[str, Any],
             timing: dict[str, float], splits: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """A results card with this context's encoder, data set, seed and input conversion filled in."""
        from byol.eval.cards import make_card

        return make_card(protocol=protocol, metrics=metrics, dataset=self.data.name,
                         splits=self.splits() if splits is None else splits, hyperparameters=hyperparameters,
                         encoder=self.source.card_info(), seed=self.seed, timing=timing,
                         conversion=self.plan.message(self.data.name), source_dataset=self.source.source_dataset,
                         **extra)

    def recalibrated(self) -> EvalContext:
        """This context with the encoder's BatchNorm statistics recalibrated on the *train* split, as the
        evaluation feeds it (the fair random-init floor's second variant, :mod:`byol.eval.floor`)."""
        from byol.eval.floor import BN_IMAGES, recalibrate_bn

        images = self.images("train")
        enc = recalibrate_bn(self.source.encoder, images, size=self.plan.size, mean=self.plan.mean,
                             std=self.plan.std, device=self.device, seed=self.seed)
        bn = f"recalibrated on {min(len(images), BN_IMAGES)} train images (seed {self.seed})"
        src = dataclasses.replace(self.source, encoder=enc, ident=f"{self.source.ident}:bn-recalibrated",
                                  meta={**self.source.meta, "bn": bn})
        return dataclasses.replace(self, source=src, variant="bn-recalibrated")

    def card_name(self, protocol: str, tag: str = "") -> str:
        from byol.eval.cards import card_filename

        tag = "-".join(t for t in (tag, self.variant) if t)

        return card_filename(protocol, self.data.name, tag)

    def write_card(self, card: dict[str, Any], tag: str = "") -> Path:
        """Write ``card`` into :attr:`out_dir` under its protocol's file name."""
        from byol.eval.cards import write_card

        return write_card(self.out_dir, card, self.card_name(card["protocol"], tag))


def prepare(
    source: SourceSpec,
    dataset: str | None = None,
    *,
    data: DataOptions = DataOptions(),
    split: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    feature_cache: bool = True,
    batch_size: int = 512,
    log: Callable[[str], None] | None = None,
) -> EvalContext:
    """Set up one evaluation of ``source`` on ``dataset`` (default: the encoder's pretraining data).

    Sets ``threads`` and resolves ``device``; loads the encoder (a random-init backbone without
    ``in_channels`` takes the data set's channel count); loads labeled train/test splits (or, with
    ``split``, that one split, labels optional: ``byol embed``); plans the input adaptation; picks the
    output directory (``out_dir``, else :func:`default_out_dir`) and the feature cache
    (``RUN_DIR/eval/features`` for a run's encoder, else ``OUT_DIR/features``; none without
    ``feature_cache``). ``log`` receives notes such as a val or carved test split.
    """
    from byol.runtime.device import resolve_device, set_threads

    set_threads(threads)
    dev = resolve_device(device)
    started = time.perf_counter()
    if split is not None and not dataset:
        raise ConfigError("name the data set to embed")
    channels = None
    if source.random_init is True and not source.in_channels and dataset:  # a run's baseline takes the run's
        channels = probe_channels(dataset, split or "train", data)
    src = load_source(source, seed=seed, data_channels=channels)
    if split is None:
        ev = load_eval_data(src, dataset, data, log=log)
    else:
        ev = load_split(src, dataset, split, data)
    plan = plan_for(src, ev.train, input_size=data.input_size, decoded_size=ev.decoded_size)
    out = Path(out_dir) if out_dir else default_out_dir(src)
    cache = None
    if feature_cache:
        cache = (src.run_dir / "eval" / "features") if src.run_dir is not None else out / "features"
    return EvalContext(source=src, data=ev, plan=plan, device=dev, out_dir=out, feature_cache_dir=cache, seed=seed,
                       batch_size=batch_size, test_fraction=data.test_fraction, started=started)

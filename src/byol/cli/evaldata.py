"""Labeled evaluation data for ``byol eval``: named data sets or folders, a carved test split where a
folder has none, and the channel/size/normalisation adaptation to an encoder.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol.cli.sources import EncoderSource
from byol.errors import ConfigError, DataError

NAMED_DATASETS = ("fashion-mnist", "cifar10", "cifar100", "stl10")
TEST_HOLDOUT_SEED = 0  # the carved test split does not move with --seed

@dataclass
class EvalData:
    name: str  # what the user passed (or the run's source)
    key: str  # cache key: canonical name or resolved path
    train: Any  # ImageSet (train minus the carved test, if any)
    test: Any  # ImageSet
    train_index: Any  # int64 tensor: positions of ``train`` in the data set's train split
    test_index: Any  # positions of a carved test split in the train split (None: a real test split)
    test_note: str  # how the test split was obtained
    num_classes: int
    decoded_size: int | None = None  # a foreign folder decoded at the encoder's size


def is_named_dataset(ds: str) -> bool:
    from byol.data import DATASET_ALIASES

    return ds.lower() in DATASET_ALIASES and "/" not in ds


def _dataset_key(ds: str) -> str:
    from byol.data import DATASET_ALIASES

    if is_named_dataset(ds):
        return DATASET_ALIASES[ds.lower()]
    return str(Path(ds).expanduser().resolve())


def same_source(src: EncoderSource, ds: str) -> bool:
    return src.source_dataset is not None and _dataset_key(src.source_dataset) == _dataset_key(ds)


def load_kwargs(a: argparse.Namespace, src: EncoderSource, ds: str) -> dict[str, Any]:
    """``load_images`` options for ``ds``: the run's own data set is decoded as in pretraining; another
    image folder is decoded at the encoder's input size (shorter side resized, centre crop)."""
    d = src.config.get("data") or {}
    same = same_source(src, ds)
    size = None
    if same:
        size = d.get("image_size")
    elif not is_named_dataset(ds):
        size = a.image_size or src.size  # folders of mixed sizes need a decode size
    return dict(
        image_size=size,
        data_dir=a.data_dir or (d.get("data_dir") if same else None),
        cache_dir=a.cache_dir or d.get("cache_dir"),
        progress=False,
    )


def load_eval_data(a: argparse.Namespace, src: EncoderSource, ds: str | None) -> EvalData:
    """Labeled train and test splits of ``ds``; a folder without a test split gets one carved from train."""
    import torch

    from byol.data import load_images
    from byol.eval.splits import stratified_split

    ds = ds or src.source_dataset
    if not ds:
        raise ConfigError("--dataset is required (the encoder has no run config naming its data set)")
    kw = load_kwargs(a, src, ds)
    decoded = kw["image_size"] if not same_source(src, ds) else None
    train = load_images(ds, "train", **kw)
    if train.labels is None:
        raise DataError(f"{ds} has no labels: evaluation needs a labeled data set (one subfolder per class)")
    note = "the data set's test split"
    try:
        test = load_images(ds, "test", **kw)
        index, hold = torch.arange(len(train)), None
    except DataError:
        if is_named_dataset(ds):
            raise
        keep, hold = stratified_split(train.labels, a.test_fraction, TEST_HOLDOUT_SEED, name="test fraction")
        test, train, index = train.subset(hold), train.subset(keep), keep
        note = f"held out {a.test_fraction:.0%} of train (stratified, seed {TEST_HOLDOUT_SEED}): {ds} has no test split"
        print(f"note: {note}", flush=True)
    if test.labels is None:
        raise DataError(f"{ds}: the test split has no labels")
    k = train.num_classes or int(train.labels.max()) + 1
    if test.classes is not None and train.classes is not None and test.classes != train.classes:
        raise DataError(f"{ds}: train and test splits have different classes")
    return EvalData(name=ds, key=_dataset_key(ds), train=train, test=test, train_index=index, test_index=hold,
                    test_note=note, num_classes=int(k), decoded_size=decoded)


def plan_for(a: argparse.Namespace, src: EncoderSource, data, decoded_size: int | None = None) -> Any:
    """Channel / size / normalisation adaptation of ``data`` (an ImageSet) for ``src``'s encoder."""
    from byol.data import normalization
    from byol.eval.transfer import plan_adaptation

    if src.mean is not None and src.std is not None:
        mean, std, origin = src.mean, src.std, src.stats_from
    else:
        mean, std = normalization(data.name, data.images)
        origin = "the data set's"
    return plan_adaptation(data_channels=data.num_channels, data_size=data.image_size,
                           encoder_channels=src.in_channels, size=a.image_size or src.size,
                           mean=mean, std=std, stats_from=origin, decoded_size=decoded_size)

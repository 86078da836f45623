"""Labeled evaluation data: named data sets or folders, a carved test split where a folder has none,
and the channel/size/normalisation adaptation of the images to an encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol.errors import ConfigError, DataError
from byol.eval.encoders import EncoderSource
from byol.eval.adapt import Adaptation

__all__ = ["TEST_HOLDOUT_SEED", "DataOptions", "EvalData", "is_named_dataset", "load_eval_data", "load_split",
           "plan_for", "probe_channels", "same_source"]

TEST_HOLDOUT_SEED = 0  #: the carved test split does not move with the evaluation's seed


@dataclass(frozen=True)
class DataOptions:
    """How to read the evaluated data set (``byol eval`` flags of the same names)."""

    input_size: int | None = None  #: encoder input size (default: the run's view size, else the images')
    data_dir: str | None = None  #: where a named data set's files are (default: the run's, for its own data)
    cache_dir: str | None = None  #: decoded-image cache (default: the run's data.cache_dir)
    test_fraction: float = 0.2  #: for a folder without a test split: the stratified share of train held out


@dataclass
class EvalData:
    """Train and test images of the evaluated data set (``test`` is ``None`` when one split was loaded)."""

    name: str  #: what the user passed (or the run's source)
    key: str  #: cache key: canonical name or resolved path
    train: Any  #: ImageSet (train minus the carved test, if any; or the one split loaded)
    test: Any  #: ImageSet, or None
    train_index: Any  #: int64 tensor: positions of ``train`` in the data set's train split
    test_index: Any  #: positions of a carved test split in the train split (None: a real test split)
    test_note: str  #: how the test split was obtained
    num_classes: int
    decoded_size: int | None = None  #: a foreign folder decoded at the encoder's size
    test_kind: str = "native"  #: where ``test`` comes from: "native" (the test split), "val" or "carved"

    @property
    def carved(self) -> bool:
        """Whether the test split was held out of train (the folder has none)."""
        return self.test_index is not None


def is_named_dataset(ds: str) -> bool:
    from byol.data import DATASET_ALIASES

    return ds.lower() in DATASET_ALIASES and "/" not in ds


def _dataset_key(ds: str) -> str:
    from byol.data import DATASET_ALIASES

    if is_named_dataset(ds):
        return DATASET_ALIASES[ds.lower()]
    return str(Path(ds).expanduser().resolve())


def same_source(src: EncoderSource, ds: str) -> bool:
    """Whether ``ds`` is the data set ``src`` was pretrained on."""
    return src.source_dataset is not None and _dataset_key(src.source_dataset) == _dataset_key(ds)


def _load_kwargs(src: EncoderSource, ds: str, options: DataOptions) -> dict[str, Any]:
    """``load_images`` options for ``ds``: the run's own data set is decoded as in pretraining; another
    image folder is decoded at the encoder's input size (shorter side resized, centre crop)."""
    d = src.config.get("data") or {}
    same = same_source(src, ds)
    size = None
    if same:
        size = d.get("image_size")
    elif not is_named_dataset(ds):
        size = options.input_size or src.size  # folders of mixed sizes need a decode size
    return dict(
        image_size=size,
        data_dir=options.data_dir or (d.get("data_dir") if same else None),
        cache_dir=options.cache_dir or d.get("cache_dir"),
        progress=False,
    )


def probe_channels(ds: str, split: str, options: DataOptions) -> int:
    """The channel count of ``ds`` (cheap for named sets): a random-init backbone's default input."""
    from byol.data import load_images

    size = options.input_size if not is_named_dataset(ds) else None
    return load_images(ds, split, image_size=size, data_dir=options.data_dir, cache_dir=options.cache_dir,
                       progress=False).num_channels


def _evaluation_split(ds: str, train: Any, kw: dict[str, Any], options: DataOptions,
                      log: Callable[[str], None] | None) -> tuple[Any, Any, Any, Any, str, str]:
    """``(test, train, train_index, test_index, note, kind)``: the test split of ``ds``, else (a folder) its
    val split, else a stratified share of ``train`` (seed :data:`TEST_HOLDOUT_SEED`), said through ``log``."""
    import torch

    from byol.data import load_images
    from byol.eval.splits import stratified_split

    everything = torch.arange(len(train))
    try:
        return load_images(ds, "test", **kw), train, everything, None, "the data set's test split", "native"
    except DataError:
        if is_named_dataset(ds):
            raise
    say = log or (lambda _: None)
    try:
        val = load_images(ds, "val", **kw)
    except DataError:
        frac = options.test_fraction
        keep, hold = stratified_split(train.labels, frac, TEST_HOLDOUT_SEED, name="test fraction")
        note = f"held out {frac:.0%} of train (stratified, seed {TEST_HOLDOUT_SEED}): {ds} has no test split"
        say(f"note: {note}")
        return train.subset(hold), train.subset(keep), keep, hold, note, "carved"
    say(f"note: evaluating on the data set's val split: {ds} has no test split")
    return val, train, everything, None, "the data set's val split", "val"


def load_eval_data(
    src: EncoderSource, ds: str | None, options: DataOptions, *, log: Callable[[str], None] | None = None
) -> EvalData:
    """Labeled train and test splits of ``ds`` (default: ``src``'s pretraining data). A folder without a
    test split is evaluated on its val split (``val/``, ``valid/``, ``validation/``), else on a test split
    carved from train (stratified, seed :data:`TEST_HOLDOUT_SEED`); a note says which through ``log``."""
    from byol.data import load_images

    ds = ds or src.source_dataset
    if not ds:
        raise ConfigError("--dataset is required (the encoder has no run config naming its data set)")
    kw = _load_kwargs(src, ds, options)
    train = load_images(ds, "train", **kw)
    if train.labels is None:
        raise DataError(f"{ds} has no labels: evaluation needs a labeled data set (one subfolder per class)")
    test, train, index, hold, note, kind = _evaluation_split(ds, train, kw, options, log)
    if test.labels is None:
        raise DataError(f"{ds}: the {'val' if kind == 'val' else 'test'} split has no labels")
    k = train.num_classes or int(train.labels.max()) + 1
    if test.classes is not None and train.classes is not None and test.classes != train.classes:
        raise DataError(f"{ds}: train and {'val' if kind == 'val' else 'test'} splits have different classes")
    return EvalData(name=ds, key=_dataset_key(ds), train=train, test=test, train_index=index, test_index=hold,
                    test_note=note, num_classes=int(k), decoded_size=None if same_source(src, ds) else kw["image_size"],
                    test_kind=kind)


def load_split(src: EncoderSource, ds: str, split: str, options: DataOptions) -> EvalData:
    """One split of ``ds``, labeled or not (``byol embed``), as :class:`EvalData` with ``test=None``."""
    from byol.data import load_images

    kw = _load_kwargs(src, ds, options)
    images = load_images(ds, split, **kw)
    return EvalData(name=ds, key=_dataset_key(ds), train=images, test=None, train_index=None, test_index=None,
                    test_note="", num_classes=int(images.num_classes or 0),
                    decoded_size=None if same_source(src, ds) else kw["image_size"])


def plan_for(src: EncoderSource, images: Any, *, input_size: int | None, decoded_size: int | None) -> Adaptation:
    """Channel / size / normalisation adaptation of ``images`` (an ImageSet) for ``src``'s encoder:
    the encoder's own statistics when known, else the data set's."""
    from byol.data import normalization
    from byol.eval.adapt import plan_adaptation

    if src.mean is not None and src.std is not None:
        mean, std, origin = src.mean, src.std, src.stats_from
    else:
        mean, std = normalization(images.name, images.images)
        origin = "the data set's"
    return plan_adaptation(data_channels=images.num_channels, data_size=images.image_size,
                           encoder_channels=src.in_channels, size=input_size or src.size,
                           mean=mean, std=std, stats_from=origin, decoded_size=decoded_size)

"""The value checks of a pretraining config that types cannot express: ranges, choices, and the
did-you-mean of a mistyped name. Torch-free and below :mod:`byol.config`, which runs them at load."""

from __future__ import annotations

import difflib
import math
from typing import Any

from byol.errors import ConfigError


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``word``, else ``""``."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: (section, key) -> (lowest, highest, whether the lowest is allowed): the ranges types cannot express.
_RANGES: dict[tuple[str, str], tuple[float, float, bool]] = {
    ("data", "image_size"): (0, math.inf, False), ("data", "view_size"): (0, math.inf, False),
    ("data", "knn_bank"): (0, math.inf, True), ("data", "knn_queries"): (0, math.inf, True),
    ("model", "width"): (0, math.inf, False),
    ("method", "proj_hidden"): (0, math.inf, False), ("method", "proj_dim"): (0, math.inf, False),
    ("method", "pred_hidden"): (0, math.inf, False), ("method", "tau_base"): (0, 1, True),
    ("method", "negative_weight"): (0, math.inf, True), ("method", "temperature"): (0, math.inf, False),
    ("method", "queue_size"): (0, math.inf, False), ("method", "momentum"): (0, 1, True),
    ("method", "split_bn_groups"): (0, math.inf, False),
    ("optim", "base_lr"): (0, math.inf, False), ("optim", "weight_decay"): (0, math.inf, True),
    ("optim", "momentum"): (0, 1, True), ("optim", "eta"): (0, math.inf, False),
    ("optim", "warmup_epochs"): (0, math.inf, True), ("optim", "predictor_lr_mult"): (0, math.inf, False),
    ("train", "epochs"): (0, math.inf, False), ("train", "budget_pace_window"): (0, math.inf, False),
    ("train", "threads"): (0, math.inf, False), ("train", "log_every"): (0, math.inf, False),
    ("train", "ckpt_every"): (0, math.inf, False), ("train", "ckpt_minutes"): (0, math.inf, False),
    ("train", "keep_checkpoints"): (0, math.inf, True), ("train", "knn_every"): (0, math.inf, True),
    ("train", "knn_k"): (0, math.inf, False), ("data", "limit"): (0, math.inf, False),
    ("data", "workers"): (0, math.inf, True),
}

#: Keys with a fixed set of values (the method and backbone names are checked by their registries).
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("method", "tau_schedule"): ("cosine", "constant"), ("method", "target"): ("ema", "online-sg", "online"),
    ("method", "target_init"): ("random", "copy"), ("train", "amp"): ("auto", "off", "fp16", "bf16"),
    ("data", "stream"): ("auto", "on", "off"),
}


def check_ranges(cfg: Any) -> None:
    """Every value of a PretrainConfig (``cfg``) in its range and every choice among its values."""
    for (section, key), (low, high, closed) in _RANGES.items():
        value = getattr(getattr(cfg, section), key)
        if value is None:
            continue
        if value < low or (value == low and not closed) or value > high:
            lo = f"{'>=' if closed else '>'} {low:g}"
            want = f"in [{low:g}, {high:g}]" if high < math.inf else ("positive" if lo == "> 0" else lo)
            raise ConfigError(f"{section}.{key} must be {want}, got {value!r}")
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key} must be one of {', '.join(allowed)}, got {value!r}"
                              f"{did_you_mean(str(value), list(allowed))}")

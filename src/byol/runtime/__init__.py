"""Process and device settings: the allocator (:mod:`byol.runtime.malloc`, no torch import, so it can run
before torch is imported) and the training device and precision (:mod:`byol.runtime.device`, imported on
first use)."""

from __future__ import annotations

import importlib
from typing import Any

from byol.runtime.malloc import malloc_mode, tune_malloc

_DEVICE = ("autocast_for", "cpu_has_fast_bf16", "precision_name", "resolve_amp", "resolve_device", "set_threads")

__all__ = ["malloc_mode", "tune_malloc", *_DEVICE]


def __getattr__(name: str) -> Any:
    if name in _DEVICE:
        return getattr(importlib.import_module("byol.runtime.device"), name)
    raise AttributeError(f"module 'byol.runtime' has no attribute {name!r}")

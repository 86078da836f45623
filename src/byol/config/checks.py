"""The value checks of a config that types cannot express: ranges, choices, and the did-you-mean of a
mistyped name. Torch-free and below :mod:`byol.config`.

Each config section is a dataclass whose fields declare their own range or choices in their metadata
(:func:`ranged`, :func:`choice`); :class:`Section` checks them in ``__post_init__``, so a section built in
code is checked exactly like one read from YAML, and :func:`check_section` is the one place that reads
the metadata. A method's section (``byol.methods``) declares its knobs the same way, beside the method.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, ClassVar

from byol.errors import ConfigError


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``word``, else ``""``."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def ranged(default: Any, low: float = 0, high: float = math.inf, *, low_ok: bool = False) -> Any:
    """A field whose value (None aside) must lie in ``[low, high]`` (``(low, high]`` unless ``low_ok``)."""
    return dataclasses.field(default=default, metadata={"range": (low, high, low_ok)})


def choice(default: str, *allowed: str) -> Any:
    """A field whose value must be one of ``allowed``."""
    return dataclasses.field(default=default, metadata={"choices": allowed})


def _check_value(key: str, value: Any, meta: Any) -> None:
    if "range" in meta and value is not None:
        low, high, closed = meta["range"]
        if value < low or (value == low and not closed) or value > high:
            lo = f"{'>=' if closed else '>'} {low:g}"
            want = f"in [{low:g}, {high:g}]" if high < math.inf else ("positive" if lo == "> 0" else lo)
            raise ConfigError(f"{key} must be {want}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        allowed = meta["choices"]
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}"
                          f"{did_you_mean(str(value), list(allowed))}")


def check_section(section: Any, name: str) -> None:
    """Every field of the dataclass ``section`` in the range / among the choices its metadata declares;
    a ConfigError naming ``<name>.<field>`` (e.g. ``method.tau_base``) for the first that is not."""
    for f in dataclasses.fields(section):
        _check_value(f"{name}.{f.name}", getattr(section, f.name), f.metadata)


class Section:
    """Base of a config section dataclass: its fields are checked (:func:`check_section`) when it is built.

    ``SECTION`` is the section's key in a run's config (``data``, ``method``, ...), used in the messages."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_section(self, self.SECTION)

"""Wall-clock durations as users write them (``--budget 10m``, ``train.budget: 1h30m``). No torch here."""

from __future__ import annotations

import re

from byol.errors import ConfigError

__all__ = ["parse_duration"]

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(text: str | None, key: str | None = None) -> float | None:
    """``"10m"`` -> 600.0, ``"1h30m"`` -> 5400.0, ``"90s"``/``"90"`` -> 90.0; None -> None.

    A malformed or non-positive duration raises ConfigError, naming ``key`` (the config key) if given.
    """
    if text is None or text == "":
        return None
    where = f"{key}: " if key else ""
    t = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        total = float(t)
    else:
        m = _DURATION.match(t)
        if not m or not any(m.groups()):
            raise ConfigError(f"{where}bad duration {text!r}: use e.g. 90s, 10m, 1h30m")
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        total = h * 3600 + mi * 60 + s
    if total <= 0:
        raise ConfigError(f"{where}duration must be positive, got {text!r}")
    return total

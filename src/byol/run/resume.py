"""Resuming a run: which config differences a resume may apply, and whether there is anything left to train."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from byol.data.sizes import Sizes
from byol.errors import ByolError, ConfigError
from byol.run.files import last_checkpoint, read_checkpoint


#: Keys a resume may change (with ``allow_changes``): how long, how often, where and how fast, never what
#: is learned. Any other difference between a run's checkpoint and the resumed config is refused.
RESUME_SAFE_KEYS = frozenset({
    "train.budget", "train.epochs", "train.log_every", "train.update_stats", "train.ckpt_every", "train.ckpt_minutes",
    "train.keep_checkpoints", "train.stop_on_collapse", "train.progress", "train.threads", "train.device",
    "data.data_dir", "data.cache_dir", "data.download", "data.workers", "description",
})


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:  # section.key; deeper dicts (views, model.options) compare whole
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def check_resume_config(stored: dict[str, Any], now: dict[str, Any], allow_changes: bool, *,
                        legacy: bool = False) -> list[str]:
    """The keys in which ``now`` (the config a resume would use) differs from ``stored`` (the checkpoint's);
    ConfigError naming them unless all are in :data:`RESUME_SAFE_KEYS` and ``allow_changes``.

    ``legacy``: ``stored`` comes from a run written before runs stored their :class:`~byol.data.sizes.Sizes`,
    whose ``data.view_size`` held the resolved view size (:func:`check_resume_sizes` compares that one)."""
    old, new = _flat(stored), _flat(now)
    derived = ("data.mean", "data.std") + (("data.view_size",) if legacy else ())  # None: resolved from the data
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)
                     and not (k in derived and new.get(k) is None)
                     and not (k == "data.stream" and new.get(k) == "auto"))  # auto: the run's resolved choice
    unsafe = [k for k in changed if k not in RESUME_SAFE_KEYS]
    diffs = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in (unsafe or changed))
    if unsafe:
        raise ConfigError(f"--resume refused: {diffs} differ from the run's checkpoint and would change the result; "
                          "start a new run instead")
    if changed and not allow_changes:
        raise ConfigError(f"--resume: {diffs} differ from the run's checkpoint; pass --allow-changes to apply them")
    return changed


def resume_checkpoint(run_dir: Path, config: dict[str, Any], allow_changes: bool,
                      stored_as: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The run's last checkpoint (verified), after checking that ``config`` (the resolved config the resume
    would use) may continue it (:func:`check_resume_config`). ``stored_as`` rewrites the checkpoint's config
    as ``config`` was written (a run from before a key moved: :func:`byol.train.config.stored_as_now`)."""
    last = last_checkpoint(run_dir)
    if not last.is_file():
        raise ByolError(f"nothing to resume: {last} does not exist")
    ckpt = read_checkpoint(last)
    stored = ckpt.get("config") or {}
    check_resume_config(stored_as(stored) if stored_as else stored, config, allow_changes, legacy="sizes" not in ckpt)
    return ckpt


def check_resume_sizes(ckpt: dict[str, Any], sizes: Sizes) -> None:
    """ConfigError unless ``sizes`` (resolved for the resume) are the run's: the views and the decoding the
    checkpoint was trained with (stored, or an older run's config), so the rest of the run learns the same."""
    was = Sizes.stored(ckpt, ckpt.get("config") or {})
    if was is not None and (was.view, was.decode) != (sizes.view, sizes.decode):
        raise ConfigError(f"--resume refused: the run trained on {was.view} px views (decoded at {was.decode}), this "
                          f"resume would use {sizes.view} px (decoded at {sizes.decode}); start a new run instead")


def finished(ckpt: dict[str, Any]) -> bool:
    """Whether a checkpoint's run already trained to its last planned step."""
    st = ckpt["state"]
    return bool(st.get("finished")) or 0 < st.get("total_steps", 0) <= st.get("step", 0)



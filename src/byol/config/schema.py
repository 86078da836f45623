"""Typed configuration: the torch-free sections, YAML presets and dotted ``--set key=value`` overrides.

No torch import here (config sits at the bottom of the import graph). Unknown keys and values of the
wrong type are rejected with a :class:`~byol.errors.ConfigError` that names the key; each section checks
its values' ranges and choices when it is built (:class:`byol.config.checks.Section`).

The whole-run config, whose ``method`` section is the chosen method's own dataclass, sits above the
methods (:mod:`byol.train.config`: ``PretrainConfig``, ``build_config``, ``validate_pretrain``); code below
it that needs one section of a stored config parses just that one (:func:`parse_section`). The parsed values
are there for the code that uses them (:attr:`TrainConfig.budget_seconds`, :attr:`ViewsConfig.specs`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from byol.config.duration import parse_duration
from byol.config.checks import Section, choice, did_you_mean, ranged
from byol.errors import ConfigError
from byol.config.views import ViewSpec, small_view_spec, view_specs

@dataclass
class DataConfig(Section):
    SECTION: ClassVar[str] = "data"
    source: str = "fashion-mnist"  #: dataset name (fashion-mnist, cifar10, cifar100, stl10) or folder/zip path
    split: str = "train"  #: pretraining split; "a+b" joins splits (train+unlabeled: labels still from train)
    data_dir: str | None = None
    image_size: int | None = ranged(None)  #: resize images (short side + center crop) when decoding; None = native
    view_size: int | None = ranged(None)  #: output size of the augmented views (and eval); None = image_size
    cache_dir: str | None = None
    download: bool = False
    limit: int | None = ranged(None)  #: pretrain on a seeded random subset of this many images (quick runs, tests)
    eval_split: str | None = None  #: split of the online kNN monitor's queries (None: held out of train)
    knn_bank: int = ranged(10000, low_ok=True)  #: train images in the online kNN bank (0 = no online kNN)
    knn_queries: int = ranged(10000, low_ok=True)  #: eval images used as online kNN queries
    mean: list[float] | None = None  #: normalization; None = the data set's known statistics or computed
    std: list[float] | None = None
    #: decode per sample, every epoch, random crops of the whole image (byol.data.stream), instead of once into
    #: the cache: auto (folders/zips whose decoded images would exceed 8 GiB) | on | off
    stream: str = choice("auto", "auto", "on", "off")
    #: streaming: DataLoader decoding processes (0: in-process; None: CPUs - 1, <= 8)
    workers: int | None = ranged(None, low_ok=True)

@dataclass
class ModelConfig(Section):
    SECTION: ClassVar[str] = "model"
    backbone: str = "resnet50"
    width: float = ranged(1.0)
    small_stem: bool = False
    options: dict[str, Any] = field(default_factory=dict)  #: extra backbone options (e.g. convnet widths)

@dataclass
class MethodConfig(Section):
    """What every self-supervised method's section has: its name and projection head. The backbone is ``model``.

    Each method extends it with its own knobs in its own module (``byol.methods``: e.g. ``BYOLConfig``),
    registered with the method (``@register("byol", config=BYOLConfig)``); the whole-run config
    (:class:`byol.train.config.PretrainConfig`) picks the section by ``name``. The heads are shared by every
    method (SimCLR's and MoCo v2's papers use 2048 -> 128).
    """

    SECTION: ClassVar[str] = "method"
    #: older names of this section's keys, read by :meth:`read_legacy` (known keys, never "unknown")
    LEGACY_KEYS: ClassVar[tuple[str, ...]] = ()
    name: str = "byol"  #: the registered method (byol.methods.METHODS)
    proj_hidden: int = ranged(4096)  #: projector MLP hidden width (paper: 4096)
    proj_dim: int = ranged(256)  #: projection size (paper: 256)

    @classmethod
    def read_legacy(cls, section: dict[str, Any]) -> dict[str, Any]:
        """``section`` (one layer's ``method`` mapping, for this method) with its older keys renamed."""
        return section

@dataclass
class ViewsConfig(Section):
    """Per-view overrides of the paper's T (``view1``) and T' (``view2``); keys are ViewSpec fields. With
    ``small_crops`` > 0, that many small low-resolution views follow the two (multi-crop, Caron et al. 2020,
    section 3.2), of distribution ``small`` (view 1's T with a small crop scale, :func:`small_view_spec`)."""

    SECTION: ClassVar[str] = "views"
    view1: dict[str, Any] = field(default_factory=dict)
    view2: dict[str, Any] = field(default_factory=dict)
    both: dict[str, Any] = field(default_factory=dict)  #: applied to both views before view1/view2
    small_crops: int = ranged(0, low_ok=True)  #: small views per image (0: the two views only)
    small_size: int | None = ranged(None)  #: their side in px; None: half the views' (byol.config.views)
    small: dict[str, Any] = field(default_factory=dict)  #: overrides of the small views' spec

    @property
    def small_spec(self) -> ViewSpec:
        """The small views' distribution (ConfigError naming a bad ``views.small`` key or value)."""
        return small_view_spec(self.specs[0], self.small)

    @property
    def specs(self) -> tuple[ViewSpec, ViewSpec]:
        """(T, T'): the paper's views with these overrides (ConfigError naming a bad key or value)."""
        return view_specs(self.view1, self.view2, self.both)

@dataclass
class OptimConfig(Section):
    SECTION: ClassVar[str] = "optim"
    name: str = "lars"
    base_lr: float = ranged(0.2)  #: lr = base_lr * batch_size / 256
    weight_decay: float = ranged(1.5e-6, low_ok=True)
    momentum: float = ranged(0.9, 0, 1, low_ok=True)
    eta: float = ranged(1e-3)  #: LARS trust coefficient
    warmup_epochs: float = ranged(10.0, low_ok=True)
    batch_size: int = 4096  #: the *global* effective batch (all ranks, all accumulation steps); check_batch
    accum_steps: int = 1
    #: BYOL's predictor trains at this multiple of the lr (paper: 1; a lever for short runs, docs/guide.md)
    predictor_lr_mult: float = ranged(1.0)

@dataclass
class TrainConfig(Section):
    SECTION: ClassVar[str] = "train"
    epochs: float = ranged(1000.0)
    budget: str | None = None  #: wall-clock budget ("10m", "1h30m", "90s"); schedules fit the budget
    #: with a budget: steps averaged by the per-step pace check (docs/guide.md)
    budget_pace_window: int = ranged(32)
    seed: int = 0
    device: str = "auto"
    amp: str = choice("auto", "auto", "off", "fp16", "bf16")  #: auto (fp16 on CUDA, bf16 on CPUs with AMX, else off)
    channels_last: bool = True
    compile: bool = False  #: torch.compile the method's forward (slower on the CPU demo; measure first)
    threads: int | None = ranged(None)
    log_every: int = ranged(20)
    #: log each trained layer's relative update size ||dw|| / ||w|| at the log steps (metrics.jsonl ``upd/...``)
    update_stats: bool = True
    ckpt_every: int = ranged(1000)  #: keep a numbered checkpoint every N optimizer steps (last.pt always)
    #: refresh last.pt at least this often (what a killed run may lose; docs/reliability.md)
    ckpt_minutes: float = ranged(1.0)
    keep_checkpoints: int = ranged(3, low_ok=True)  #: numbered checkpoints kept, the newest (0 = all)
    stop_on_collapse: bool = False  #: a suspected collapse stops the run (default: one warning)
    knn_every: float = ranged(1.0, low_ok=True)  #: online kNN every N epochs (0 = never)
    knn_k: int = ranged(20)
    #: after training, kNN of the encoder vs the same architecture at random init on held-out train images
    verdict: bool = True
    progress: bool = True
    #: with several processes (torchrun): BN statistics over all of them, the paper's cross-replica BN
    #: (section 3.3); None = on, except for a method whose BN is per process by design (docs/distributed.md)
    sync_bn: bool | None = None

    @property
    def budget_seconds(self) -> float | None:
        """``budget`` in seconds (None: no budget); ConfigError naming ``train.budget`` if it is malformed."""
        return parse_duration(self.budget, key="train.budget")

#: Presets ship inside the package (``byol/configs``); the repository's ``configs/`` is a symlink to it.
PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"

#: Keys that moved between sections; configs written before the move (run directories, user YAML,
#: ``--set``) are read at the new place. The heads belong to the method, the model is the backbone.
_MOVED_KEYS = {("model", "proj_hidden"): "method", ("model", "proj_dim"): "method", ("model", "pred_hidden"): "method"}

def preset_names() -> list[str]:
    return sorted(f.stem for f in PRESETS_DIR.glob("*.yaml")) if PRESETS_DIR.is_dir() else []

def find_preset(name_or_path: str | Path) -> Path:
    """A config path, or the name of a preset (``fashion-mnist`` -> byol/configs/fashion-mnist.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (PRESETS_DIR / str(name_or_path), PRESETS_DIR / f"{name_or_path}.yaml"):
        if cand.is_file():
            return cand
    raise ConfigError(f"config {str(name_or_path)!r} not found (a YAML file, or a preset: {', '.join(preset_names())})")

def preset_descriptions() -> dict[str, str]:
    """``name -> description`` of every shipped preset (read as YAML only: cheap, for ``--help``)."""
    out = {}
    for name in preset_names():
        try:
            out[name] = str((yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text()) or {}).get("description", ""))
        except (OSError, yaml.YAMLError):
            out[name] = "(unreadable)"
    return out

def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Move keys of older configs to where they live now (see ``_MOVED_KEYS``); the new place wins."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for (section, key), target in _MOVED_KEYS.items():
        old = out.get(section)
        if isinstance(old, dict) and key in old:
            value = old.pop(key)
            new = out.setdefault(target, {})
            if isinstance(new, dict):
                new.setdefault(key, value)
    return out

# ----------------------------------------------------------------------------------------------
# dict <-> dataclass with validation

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))

#: A number in exponent notation without a decimal point (``1e-4``, ``5E3``), which YAML 1.1 leaves a string.
_EXPONENT_ONLY = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_ONLY.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 1e-4 as a string: it wants 1.0e-4
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) and key.endswith(".amp") and not value:
            return "off"  # YAML 1.1 reads a bare `off` as false: `--set train.amp=off` means "off"
        if isinstance(value, bool) and key.endswith(".stream"):
            return "on" if value else "off"  # likewise `--set data.stream=on`
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value  # Any

def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) dict, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted((k for k in data if k not in names), key=str)
    if unknown:
        bad = str(unknown[0])
        raise ConfigError(f"unknown config key '{prefix}{bad}'{did_you_mean(prefix + bad, [prefix + n for n in names])}; "
                          f"valid keys here: {', '.join(prefix + n for n in names)}")
    kwargs = {name: _coerce(data[name], hints[name], prefix + name) for name in names if name in data}
    return cls(**kwargs)

def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``update`` wins); nested dicts are merged, everything else replaced."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out

def parse_override(text: str) -> dict[str, Any]:
    """``"optim.base_lr=0.5"`` -> ``{"optim": {"base_lr": 0.5}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"--set: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out

def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where (line, column) and what."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or exc.__class__.__name__
    return " ".join(f"{where}: {what}".split())

def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML{_yaml_problem(exc)}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data

def config_layers(files: list[str | Path] | tuple = (), overrides: list[str] | tuple = (),
                  extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The layers of a config, lowest first: each YAML file, then the command line (``extra``, e.g. CLI
    flags, under the ``--set`` ``overrides``). Older keys are moved to where they live now (``_MOVED_KEYS``).

    The layers stay apart (rather than merged here) because a method's own knobs belong to the method named
    with them: :func:`byol.train.config.build_config` drops a layer's keys written for another method."""
    layers = [load_yaml(f) for f in files]
    line: dict[str, Any] = dict(extra or {})
    for o in overrides:
        line = merge(line, parse_override(o))
    return [_migrate(layer) for layer in [*layers, line]]


def parse_section(cls: type, data: dict[str, Any], name: str) -> Any:
    """Section ``name`` of a whole config dict (e.g. a run's stored one) as dataclass ``cls``, for code that
    needs that section alone (the model of a checkpoint); older keys are read at their new place."""
    section = _migrate(data).get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{name}: expected a mapping, got {section!r}")
    return from_dict(cls, section, prefix=name + ".")


def fitting_batch(num_images: int, split: int) -> int:
    """The largest batch of at most ``num_images`` that :func:`check_batch` accepts for ``split`` (accum_steps
    x processes) parts: a multiple of ``split`` with two images at least per part; 0 when there is none."""
    fit = num_images // split * split
    return fit if fit >= 2 * split else 0


def check_batch(batch_size: int, accum_steps: int, world_size: int = 1, num_images: int | None = None) -> None:
    """The one check of ``optim.batch_size``, run wherever a new fact about it is known.

    The config checks it alone (``world_size`` 1), the trainer with the real number of processes, and
    :func:`byol.train.pretrain.build_pretrain` with the number of training images once they are loaded.
    ``batch_size`` is the global batch of one optimizer step: ``accum_steps`` micro-batches, each split
    over ``world_size`` processes, so it must be a positive multiple of their product; and the data must
    hold at least one batch (the trainer drops the last, incomplete one of each epoch). Each forward pass
    needs two images at least, for BatchNorm's batch statistics.
    """
    if batch_size <= 0:
        raise ConfigError(f"optim.batch_size must be a positive number of images, got {batch_size}")
    if accum_steps <= 0:
        raise ConfigError(f"optim.accum_steps must be a positive number of micro-batches, got {accum_steps}")
    split = accum_steps * world_size
    if batch_size % split:
        what = f"optim.accum_steps x {world_size} processes" if world_size > 1 else "optim.accum_steps"
        lower = batch_size // split * split
        near = " or ".join(str(n) for n in (lower, lower + split) if n > 0)
        raise ConfigError(f"optim.batch_size ({batch_size}) must be divisible by {what} ({split}): "
                          f"set optim.batch_size to a multiple of {split}, e.g. {near}")
    if batch_size // split < 2:  # BatchNorm in train mode needs two samples per channel in each forward
        raise ConfigError(f"optim.batch_size ({batch_size}) over {split} micro-batches leaves 1 image per forward "
                          f"pass, and BatchNorm needs at least 2: lower optim.accum_steps or raise the batch")
    if num_images is not None and num_images < batch_size:
        fit = fitting_batch(num_images, split)
        fix = f"lower optim.batch_size to {fit} or less" if fit else "use more images or fewer micro-batches"
        raise ConfigError(f"optim.batch_size ({batch_size}) is more than the {num_images} training images: {fix}")

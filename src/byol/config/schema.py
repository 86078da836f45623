"""Typed configuration: dataclasses, YAML presets and dotted ``--set key=value`` overrides.

No torch import here (config sits at the bottom of the import graph). Unknown keys and values of the
wrong type are rejected with a :class:`~byol.errors.ConfigError` that names the key.

``build_config(PretrainConfig, ...)`` also checks every value of a pretraining config when it is loaded
(:func:`validate_pretrain`): ranges, the batch size (:func:`check_batch`), the budget and the views (with
the torch-free :mod:`byol.config.views`). A mistake therefore fails before any data is read; each value has
one check, one error type and a one-line message naming the key. The parsed values are there for the
code that uses them (:attr:`TrainConfig.budget_seconds`, :attr:`ViewsConfig.specs`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from byol.config.duration import parse_duration
from byol.config.checks import check_ranges, did_you_mean
from byol.errors import ConfigError
from byol.config.views import ViewSpec, view_specs

@dataclass
class DataConfig:
    source: str = "fashion-mnist"  #: dataset name (fashion-mnist, cifar10, cifar100, stl10) or folder/zip path
    split: str = "train"  #: pretraining split; "a+b" joins splits (train+unlabeled: labels still from train)
    data_dir: str | None = None
    image_size: int | None = None  #: resize images (short side + center crop) when decoding; None = native
    view_size: int | None = None  #: output size of the augmented views (and eval); None = image_size
    cache_dir: str | None = None
    download: bool = False
    limit: int | None = None  #: pretrain on a seeded random subset of this many images (quick runs, tests)
    eval_split: str | None = None  #: split of the online kNN monitor's queries (None: held out of train)
    knn_bank: int = 10000  #: train images in the online kNN bank (0 = no online kNN)
    knn_queries: int = 10000  #: eval images used as online kNN queries
    mean: list[float] | None = None  #: normalization; None = the data set's known statistics or computed
    std: list[float] | None = None
    #: decode per sample, every epoch, random crops of the whole image (byol.data.stream), instead of once into
    #: the cache: auto (folders/zips whose decoded images would exceed 8 GiB) | on | off
    stream: str = "auto"
    workers: int | None = None  #: streaming: DataLoader decoding processes (0: in-process; None: CPUs - 1, <= 8)

@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    width: float = 1.0
    small_stem: bool = False
    options: dict[str, Any] = field(default_factory=dict)  #: extra backbone options (e.g. convnet widths)

@dataclass
class MethodConfig:
    """The self-supervised method (``byol.methods.METHODS``) and its heads. The backbone is ``model``.

    The heads are shared by every method (SimCLR's and MoCo v2's papers use 2048 -> 128); a key that a
    method does not use is ignored by it. Method-specific values are checked by the method's constructor.
    """

    name: str = "byol"  #: byol | simclr | moco
    proj_hidden: int = 4096  #: projector MLP hidden width (paper: 4096)
    proj_dim: int = 256  #: projection size (paper: 256)
    pred_hidden: int = 4096  #: predictor MLP hidden width (paper: 4096)
    tau_base: float = 0.996
    target_init: str = "random"
    use_predictor: bool = True
    #: BYOL: "cosine" (tau_base -> 1, the paper's) or "constant" (tau_base throughout; Table 5a's fixed-tau rows)
    tau_schedule: str = "cosine"
    #: BYOL's target: "ema" (the paper's xi), "online-sg" (the online network with stop-gradient, sg(theta)) or
    #: "online" (theta: gradients flow through the target branch too); Table 5b / App. I, Table 19
    target: str = "ema"
    #: BYOL: beta, the weight of the negative term of App. I's InfoNCE_{alpha,beta}; 0 = BYOL's loss
    negative_weight: float = 0.0
    #: SimCLR's and MoCo's temperature, BYOL's alpha; None = the method's published default
    #: (SimCLR 0.1 on ImageNet, MoCo v2 0.2, BYOL's alpha 0.1 like SimCLR's)
    temperature: float | None = None
    queue_size: int = 65536  #: MoCo: negatives in the queue, K (MoCo v2: 65536)
    momentum: float = 0.999  #: MoCo: the key encoder's momentum m, constant (MoCo v2: 0.999)
    #: MoCo: BN groups of the single-process shuffling BN (8: MoCo's 8 GPUs, each normalizing its own keys)
    split_bn_groups: int = 8

@dataclass
class ViewsConfig:
    """Per-view overrides of the paper's T (``view1``) and T' (``view2``); keys are ViewSpec fields."""

    view1: dict[str, Any] = field(default_factory=dict)
    view2: dict[str, Any] = field(default_factory=dict)
    both: dict[str, Any] = field(default_factory=dict)  #: applied to both views before view1/view2

    @property
    def specs(self) -> tuple[ViewSpec, ViewSpec]:
        """(T, T'): the paper's views with these overrides (ConfigError naming a bad key or value)."""
        return view_specs(self.view1, self.view2, self.both)

@dataclass
class OptimConfig:
    name: str = "lars"
    base_lr: float = 0.2  #: lr = base_lr * batch_size / 256
    weight_decay: float = 1.5e-6
    momentum: float = 0.9
    eta: float = 1e-3  #: LARS trust coefficient
    warmup_epochs: float = 10.0
    batch_size: int = 4096  #: the *global* effective batch (all ranks, all accumulation steps)
    accum_steps: int = 1
    #: BYOL's predictor trains at this multiple of the lr (paper: 1; a lever for short runs, docs/guide.md)
    predictor_lr_mult: float = 1.0

@dataclass
class TrainConfig:
    epochs: float = 1000.0
    budget: str | None = None  #: wall-clock budget ("10m", "1h30m", "90s"); schedules fit the budget
    budget_pace_window: int = 32  #: with a budget: steps averaged by the per-step pace check (docs/guide.md)
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  #: auto (fp16 on CUDA, bf16 on CPUs with AMX, else off) | off | fp16 | bf16
    channels_last: bool = True
    compile: bool = False  #: torch.compile the method's forward (slower on the CPU demo; measure first)
    threads: int | None = None
    log_every: int = 20
    #: log each trained layer's relative update size ||dw|| / ||w|| at the log steps (metrics.jsonl ``upd/...``)
    update_stats: bool = True
    ckpt_every: int = 1000  #: keep a numbered checkpoint every N optimizer steps (last.pt always)
    ckpt_minutes: float = 1.0  #: refresh last.pt at least this often (what a killed run may lose; docs/reliability.md)
    keep_checkpoints: int = 3  #: numbered checkpoints kept, the newest (0 = all)
    stop_on_collapse: bool = False  #: a suspected collapse stops the run (default: one warning)
    knn_every: float = 1.0  #: online kNN every N epochs (0 = never)
    knn_k: int = 20
    #: after training, kNN of the encoder vs the same architecture at random init on held-out train images
    verdict: bool = True
    progress: bool = True
    #: with several processes (torchrun): BN statistics over all of them, the paper's cross-replica BN
    #: (section 3.3); None = on, except for MoCo, whose shuffling BN is per process (docs/distributed.md)
    sync_bn: bool | None = None

    @property
    def budget_seconds(self) -> float | None:
        """``budget`` in seconds (None: no budget); ConfigError naming ``train.budget`` if it is malformed."""
        return parse_duration(self.budget, key="train.budget")

@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""  #: one line shown for the preset in ``byol --help`` / ``byol pretrain --help``

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

def build_config(
    cls: type = PretrainConfig,
    *,
    files: list[str | Path] | tuple = (),
    overrides: list[str] | tuple = (),
    extra: dict[str, Any] | None = None,
) -> Any:
    """Defaults <- YAML files (in order) <- ``extra`` (e.g. CLI flags) <- ``--set`` overrides."""
    data: dict[str, Any] = {}
    for f in files:
        data = merge(data, load_yaml(f))
    if extra:
        data = merge(data, extra)
    for o in overrides:
        data = merge(data, parse_override(o))
    if cls is PretrainConfig:
        cfg = from_dict(cls, _migrate(data))
        validate_pretrain(cfg)
        return cfg
    return from_dict(cls, data)

def check_batch(batch_size: int, accum_steps: int, world_size: int = 1, num_images: int | None = None) -> None:
    """The one check of ``optim.batch_size``, run wherever a new fact about it is known.

    The config checks it alone (``world_size`` 1), the trainer with the real number of processes, and
    :func:`byol.train.pretrain.build_pretrain` with the number of training images once they are loaded.
    ``batch_size`` is the global batch of one optimizer step: ``accum_steps`` micro-batches, each split
    over ``world_size`` processes, so it must be a positive multiple of their product; and the data must
    hold at least one batch (the trainer drops the last, incomplete one of each epoch).
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
    if num_images is not None and num_images < batch_size:
        fit = num_images // split * split
        fix = f"lower optim.batch_size to {fit} or less" if fit else "use more images"
        raise ConfigError(f"optim.batch_size ({batch_size}) is more than the {num_images} training images: {fix}")

def validate_pretrain(cfg: PretrainConfig) -> None:
    """The checks that types alone cannot express: ranges, the batch, the budget and the views.

    :func:`build_config` runs it on every pretraining config it loads; :func:`byol.train.pretrain.build_pretrain`
    runs it again for configs built or changed in code, which never went through ``build_config``.
    """
    o, t = cfg.optim, cfg.train
    check_batch(o.batch_size, o.accum_steps)
    check_ranges(cfg)
    _ = t.budget_seconds, cfg.views.specs  # parsed for their checks; read again where they are used

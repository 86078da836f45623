"""The encoder an evaluation measures: a run's online encoder, a random-init backbone (the paper's
random baseline), raw pixels (the floor below every encoder) or a torchvision model, with what is known
about how each was trained.

:class:`SourceSpec` names the encoder with plain values (what ``byol eval --checkpoint |
--random-init | --torchvision`` and their options say); :func:`load_source` builds it. Every source
can also build its supervised-from-scratch twin: the same architecture, freshly initialised.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from byol.errors import ByolError, ConfigError

if TYPE_CHECKING:
    from byol.data.sizes import Sizes

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EncoderSource", "SourceSpec", "load_source"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

T = TypeVar("T")


@dataclass(frozen=True)
class SourceSpec:
    """Which encoder: exactly one of ``checkpoint``, ``random_init``, ``raw_pixels`` and ``torchvision``."""

    checkpoint: str | Path | None = None  #: a run directory (its checkpoints/last.pt) or a checkpoint file
    #: a randomly initialised byol backbone: True for ``backbone``/``width``/``small_stem`` below, or a run
    #: directory whose architecture to use (the baseline every BYOL number of that run needs)
    random_init: bool | str | Path = False
    torchvision: str | None = None  #: a torchvision model name (random weights unless ``weights``)
    weights: str | Path | None = None  #: with ``torchvision``: a state_dict file (+ a ``byol export`` sidecar)
    backbone: str = "resnet18"
    width: float = 1.0
    small_stem: bool = False
    in_channels: int | None = None  #: with ``random_init``: input channels (default: the data set's, else 3)
    #: the images' pixels as features (True), with a run directory's inputs (its view size, mean/std) if given
    raw_pixels: bool | str | Path = False

    def validate(self) -> None:
        given = [bool(self.checkpoint), self.random_init not in (False, None, ""), bool(self.torchvision),
                 self.raw_pixels not in (False, None, "")]
        if sum(given) != 1:
            raise ConfigError("name exactly one encoder: a checkpoint, a random init, raw pixels or a torchvision "
                              "model")


@dataclass
class EncoderSource:
    """An encoder and everything known about how it was trained."""

    encoder: nn.Module
    kind: str  #: checkpoint | random-init | torchvision
    ident: str  #: identity of the weights (feature-cache key)
    in_channels: int
    #: the supervised-from-scratch baseline's encoder: the same architecture, a fresh random init drawn
    #: with torch seed ``seed + 1`` (``seed`` as given to :func:`load_source`), never the encoder above
    make_scratch: Callable[[], nn.Module]
    meta: dict[str, Any]  #: backbone description (name, width, small_stem, in_channels, options)
    mean: list[float] | None = None
    std: list[float] | None = None
    stats_from: str = ""
    size: int | None = None  #: training view size (a run's: its stored :class:`~byol.data.sizes.Sizes`)
    run_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How results name this encoder: ``BYOL`` for a run's checkpoint, else its kind (and a random init's
        BN statistics when they were recalibrated)."""
        if self.kind == "checkpoint":
            return "BYOL"
        return f"{self.kind}, BN {self.meta['bn']}" if self.meta.get("bn") else self.kind

    @property
    def source_dataset(self) -> str | None:
        return (self.config.get("data") or {}).get("source")

    def card_info(self) -> dict[str, Any]:
        info = {"kind": self.kind, "id": self.ident, "backbone": self.meta}
        if self.kind == "checkpoint":
            info.update(path=self.config.get("_checkpoint_path"), sha256_1mb=self.ident,
                        source_dataset=self.source_dataset)
        return info


def _seeded(seed: int, fn: Callable[[], T]) -> T:
    """``fn()`` with torch's global RNG seeded to ``seed``, the caller's RNG state left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def load_source(spec: SourceSpec, *, seed: int = 0, data_channels: int | None = None) -> EncoderSource:
    """The encoder ``spec`` names. ``seed`` seeds random initialisations (the scratch twin uses
    ``seed + 1``); ``data_channels`` is the evaluated images' channel count, the default input
    channels of a random-init backbone."""
    spec.validate()
    if spec.checkpoint:
        return _checkpoint_source(Path(spec.checkpoint), seed)
    if spec.random_init not in (False, None, ""):
        return _random_init_source(spec, seed, data_channels)
    if spec.raw_pixels not in (False, None, ""):
        return _raw_pixels_source(spec, data_channels)
    return _torchvision_source(spec, seed)


def _run_dir_of(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        return path.parent.parent
    return path.parent


def _first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def _checkpoint_source(path: Path, seed: int) -> EncoderSource:
    from byol.config import ModelConfig, parse_section
    from byol.eval.feature_cache import file_fingerprint
    from byol.models.factory import build_encoder, describe
    from byol.run.files import load_run_encoder

    if not path.exists():
        raise ByolError(f"no checkpoint at {path} (pass a run directory or a .pt file)")
    ckpt = path / "checkpoints" / "last.pt" if path.is_dir() else path
    try:
        enc, cfg, sizes = load_run_encoder(path)
    except ByolError:
        raise
    except KeyError as exc:  # a torch file, but not one written by `byol pretrain`
        raise ByolError(f"{ckpt} is not a byol pretraining checkpoint (no {exc} entry)") from None
    except Exception as exc:  # corrupt / foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ByolError(f"cannot read checkpoint {ckpt}: {first}") from None
    model = parse_section(ModelConfig, cfg, "model")
    in_ch = _first_conv_channels(enc)
    cfg = dict(cfg, _checkpoint_path=str(ckpt.resolve()))
    d = cfg.get("data") or {}
    return EncoderSource(
        encoder=enc, kind="checkpoint", ident=file_fingerprint(ckpt), in_channels=in_ch,
        make_scratch=lambda: _seeded(seed + 1, lambda: build_encoder(model, in_ch)),
        meta=describe(model, in_ch), mean=d.get("mean"), std=d.get("std"), stats_from="the source run's",
        size=sizes.view if sizes else None, run_dir=_run_dir_of(path), config=cfg,
    )


def _run_inputs(run_dir: bool | str | Path) -> tuple[dict[str, Any], Sizes | None]:
    """A run directory's ``data`` and ``model`` sections (plain dicts) and stored sizes: the inputs a baseline
    takes from the run it is compared with; ``({}, None)`` when ``run_dir`` is ``True`` (no run named)."""
    if run_dir is True:
        return {}, None
    from byol.config import DataConfig, ModelConfig, parse_section, to_dict
    from byol.run.files import read_run_config, run_sizes

    raw = read_run_config(Path(run_dir))
    run_cfg = {"data": to_dict(parse_section(DataConfig, raw, "data")),
               "model": to_dict(parse_section(ModelConfig, raw, "model"))}
    return run_cfg, run_sizes(Path(run_dir), run_cfg)


def _random_init_source(spec: SourceSpec, seed: int, data_channels: int | None) -> EncoderSource:
    """A random-init backbone: ``spec``'s architecture, or a run's. A run's baseline also takes the run's
    inputs (channels, view size, mean/std, its data set decoded as in pretraining), so that it is compared
    with the run's encoder on equal terms."""
    from byol.models import build_backbone

    run_cfg, sizes = _run_inputs(spec.random_init)
    if spec.random_init is True:
        name, width, small_stem, options = spec.backbone, spec.width, spec.small_stem, {}
    else:
        m = run_cfg["model"]
        name, width, small_stem, options = m["backbone"], m["width"], m["small_stem"], dict(m["options"])
    d = run_cfg.get("data") or {}
    in_ch = spec.in_channels or (len(d["mean"]) if d.get("mean") else None) or data_channels or 3

    def make(s: int) -> nn.Module:
        return _seeded(s, lambda: build_backbone(name, width=width, small_stem=small_stem, in_channels=in_ch,
                                                **options))

    opt_tag = ",".join(f"{k}={v}" for k, v in sorted(options.items())).replace(" ", "")
    return EncoderSource(
        encoder=make(seed), kind="random-init",
        ident=f"random-init:{name}:w{width:g}:ss{int(small_stem)}:c{in_ch}:{opt_tag}:seed{seed}",
        in_channels=in_ch, make_scratch=lambda: make(seed + 1),
        meta={"name": name, "width": width, "small_stem": small_stem, "in_channels": in_ch, "options": options},
        mean=d.get("mean"), std=d.get("std"), stats_from="the source run's" if d.get("mean") else "the data set's",
        size=sizes.view if sizes else None, config=run_cfg,
    )


def _raw_pixels_source(spec: SourceSpec, data_channels: int | None) -> EncoderSource:
    """The images' own pixels (after the same resize and normalisation as an encoder's inputs) as features:
    the floor a learned representation must also beat. With a run directory, that run's inputs."""
    run_cfg, sizes = _run_inputs(spec.raw_pixels)
    d = run_cfg.get("data") or {}
    in_ch = spec.in_channels or (len(d["mean"]) if d.get("mean") else None) or data_channels or 3
    return EncoderSource(
        encoder=nn.Flatten(), kind="raw-pixels", ident=f"raw-pixels:c{in_ch}", in_channels=in_ch,
        make_scratch=nn.Flatten, meta={"name": "pixels", "width": 1, "small_stem": False, "in_channels": in_ch},
        mean=d.get("mean"), std=d.get("std"), stats_from="the source run's" if d.get("mean") else "the data set's",
        size=sizes.view if sizes else None, config=run_cfg,
    )


def _strip_classifier(model: nn.Module, name: str) -> nn.Module:
    for attr in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
            return model
    raise ConfigError(f"torchvision model {name!r}: no fc/classifier/heads attribute to replace by Identity")


def _torchvision_model(name: str, seed: int, small_stem: bool, in_channels: int) -> nn.Module:
    import torchvision

    from byol.models import TORCHVISION_RESNETS, torchvision_resnet

    if small_stem or in_channels != 3 or name in TORCHVISION_RESNETS:
        return _seeded(seed, lambda: torchvision_resnet(name, small_stem=small_stem, in_channels=in_channels))
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise ConfigError(f"unknown torchvision model {name!r} (e.g. resnet18, resnet50, mobilenet_v3_small)") from None
    return _strip_classifier(_seeded(seed, lambda: builder(weights=None)), name)


def _read_sidecar(weights: Path | None) -> dict[str, Any]:
    from byol.models.export import sidecar_path

    if weights is None:
        return {}
    if not weights.is_file():
        raise ByolError(f"--weights: no file at {weights}")
    if sidecar_path(weights).is_file():
        try:
            return json.loads(sidecar_path(weights).read_text())
        except ValueError:
            return {}
    return {}


def _load_weights(enc: nn.Module, weights: Path, name: str) -> None:
    """Load a state_dict file (torch or safetensors; classifier entries dropped) into ``enc``, strictly."""
    import torch

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ByolError(f"--weights {weights}: refused, it holds objects other than tensors and plain values "
                            "(loading them could run code); export weights with `byol export`") from None
        except Exception as exc:
            raise ByolError(f"--weights {weights}: not a state_dict file ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise ByolError(f"--weights {weights}: not a state_dict file (a {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "heads.", "head."))}
    own = enc.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        what = (f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else
                f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else
                f"{len(shapes)} tensors of another shape (e.g. {shapes[0]})")
        raise ByolError(f"--weights {weights} does not fit torchvision {name}: {what}")
    enc.load_state_dict(state, strict=True)


def _torchvision_source(spec: SourceSpec, seed: int) -> EncoderSource:
    """A torchvision model, random or with ``spec.weights``. A ``byol export`` sidecar next to the
    weights (``FILE.json``) supplies the stem (small_stem, in_channels), mean/std and input size."""
    from byol.eval.feature_cache import file_fingerprint

    name = str(spec.torchvision)
    wpath = Path(spec.weights) if spec.weights else None
    side = _read_sidecar(wpath)
    bb = side.get("backbone") or {}
    small, in_ch = bool(bb.get("small_stem", False)), int(bb.get("in_channels", 3))
    enc = _torchvision_model(name, seed, small, in_ch)
    ident = f"torchvision:{name}:random-seed{seed}"
    if wpath is not None:
        _load_weights(enc, wpath, name)
        ident = f"torchvision:{name}:{file_fingerprint(wpath)}"
    if side.get("mean") and side.get("std"):
        mean, std, origin = list(side["mean"]), list(side["std"]), "the weights' sidecar"
    else:
        mean, std, origin = list(IMAGENET_MEAN), list(IMAGENET_STD), "ImageNet (torchvision convention)"
    return EncoderSource(
        encoder=enc, kind="torchvision", ident=ident, in_channels=in_ch,
        make_scratch=lambda: _torchvision_model(name, seed + 1, small, in_ch),
        meta={"name": name, "width": 1.0, "small_stem": small, "in_channels": in_ch, "options": {}},
        mean=mean, std=std, stats_from=origin, size=side.get("view_size"),
    )

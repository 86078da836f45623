"""Encoders for ``byol eval``/``embed``/``export``: a run's online encoder, a random-init backbone (the
paper's random baseline) or a torchvision model, with what is known about how each was trained.

Part of the CLI layer: it reads run directories (``config.yaml``, ``checkpoints/``) and argparse flags.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byol.errors import ByolError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

@dataclass
class EncoderSource:
    """An encoder and everything known about how it was trained."""

    encoder: Any  # nn.Module
    kind: str  # checkpoint | random-init | torchvision
    ident: str  # identity of the weights (feature-cache key)
    in_channels: int
    make_scratch: Callable[[], Any]  # same architecture, fresh random init
    meta: dict[str, Any]  # backbone description (name, width, small_stem, in_channels, options)
    mean: list[float] | None = None
    std: list[float] | None = None
    stats_from: str = ""
    size: int | None = None  # training view size
    run_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def source_dataset(self) -> str | None:
        return (self.config.get("data") or {}).get("source")

    def card_info(self) -> dict[str, Any]:
        info = {"kind": self.kind, "id": self.ident, "backbone": self.meta}
        if self.kind == "checkpoint":
            info.update(path=self.config.get("_checkpoint_path"), sha256_1mb=self.ident,
                        source_dataset=self.source_dataset)
        return info


def _seeded(seed: int, fn: Callable[[], Any]) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def _run_dir_of(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        return path.parent.parent
    return path.parent


def _strip_classifier(model, name: str):
    from torch import nn

    for attr in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
            return model
    raise ConfigError(f"torchvision model {name!r}: no fc/classifier/heads attribute to replace by Identity")


def _torchvision_model(name: str, seed: int):
    import torchvision

    from byol.models import TORCHVISION_RESNETS, torchvision_resnet

    if name in TORCHVISION_RESNETS:
        return _seeded(seed, lambda: torchvision_resnet(name))
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise ConfigError(f"unknown torchvision model {name!r} (e.g. resnet18, resnet50, mobilenet_v3_small)") from None
    return _strip_classifier(_seeded(seed, lambda: builder(weights=None)), name)


def load_source(a: argparse.Namespace, *, data_channels: int | None = None) -> EncoderSource:
    """The encoder chosen by ``--checkpoint`` / ``--random-init`` / ``--torchvision``."""
    from byol.config import PretrainConfig, build_config
    from byol.models.factory import build_encoder
    from byol.rundir import load_encoder
    from byol.eval.cache import file_fingerprint
    from byol.models import build_backbone

    if a.checkpoint:
        path = Path(a.checkpoint)
        if not path.exists():
            raise ByolError(f"no checkpoint at {path} (pass a run directory or a .pt file)")
        ckpt = path / "checkpoints" / "last.pt" if path.is_dir() else path
        try:
            enc, cfg = load_encoder(path)
        except ByolError:
            raise
        except KeyError as exc:  # a torch file, but not one written by `byol pretrain`
            raise ByolError(f"{ckpt} is not a byol pretraining checkpoint (no {exc} entry)") from None
        except Exception as exc:  # corrupt / foreign file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ByolError(f"cannot read checkpoint {ckpt}: {first}") from None
        pc = build_config(PretrainConfig, extra=cfg)
        in_ch = _first_conv_channels(enc)
        cfg = dict(cfg, _checkpoint_path=str(ckpt.resolve()))
        d = cfg.get("data") or {}
        return EncoderSource(
            encoder=enc, kind="checkpoint", ident=file_fingerprint(ckpt), in_channels=in_ch,
            make_scratch=lambda: _seeded(a.seed + 1, lambda: build_encoder(pc.model, in_ch)),
            meta={"name": pc.model.backbone, "width": pc.model.width, "small_stem": pc.model.small_stem,
                  "in_channels": in_ch, "options": dict(pc.model.options)},
            mean=d.get("mean"), std=d.get("std"), stats_from="the source run's", size=d.get("view_size"),
            run_dir=_run_dir_of(path), config=cfg,
        )
    if a.random_init:
        in_ch = a.in_channels or data_channels or 3
        if a.random_init is True:
            name, width, small_stem, options = a.backbone, a.width, a.small_stem, {}
        else:  # the architecture of a run: the baseline every BYOL number of that run needs
            from byol.rundir import load_run_config

            m = load_run_config(Path(a.random_init)).model
            name, width, small_stem, options = m.backbone, m.width, m.small_stem, dict(m.options)

        def make(seed: int):
            return _seeded(seed, lambda: build_backbone(name, width=width, small_stem=small_stem,
                                                        in_channels=in_ch, **options))

        opt_tag = ",".join(f"{k}={v}" for k, v in sorted(options.items())).replace(" ", "")
        return EncoderSource(
            encoder=make(a.seed), kind="random-init",
            ident=f"random-init:{name}:w{width:g}:ss{int(small_stem)}:c{in_ch}:{opt_tag}:seed{a.seed}",
            in_channels=in_ch, make_scratch=lambda: make(a.seed + 1),
            meta={"name": name, "width": width, "small_stem": small_stem, "in_channels": in_ch, "options": options},
            stats_from="the data set's",
        )
    return _torchvision_source(a)


def _torchvision_source(a: argparse.Namespace) -> EncoderSource:
    """``--torchvision NAME [--weights FILE]``. A ``byol export`` sidecar next to the weights
    (``FILE.json``) supplies the stem (small_stem, in_channels), mean/std and input size."""
    import torch

    from byol.eval.cache import file_fingerprint
    from byol.models.export import sidecar_path
    from byol.models import torchvision_resnet

    name = a.torchvision
    side: dict[str, Any] = {}
    wpath = Path(a.weights) if a.weights else None
    if wpath is not None:
        if not wpath.is_file():
            raise ByolError(f"--weights: no file at {wpath}")
        if sidecar_path(wpath).is_file():
            try:
                side = json.loads(sidecar_path(wpath).read_text())
            except ValueError:
                side = {}
    bb = side.get("backbone") or {}
    small, in_ch = bool(bb.get("small_stem", False)), int(bb.get("in_channels", 3))

    def make(seed: int):
        if small or in_ch != 3:
            return _seeded(seed, lambda: torchvision_resnet(name, small_stem=small, in_channels=in_ch))
        return _torchvision_model(name, seed)

    enc = make(a.seed)
    ident = f"torchvision:{name}:random-seed{a.seed}"
    if wpath is not None:
        if wpath.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(wpath))
        else:
            try:
                state = torch.load(wpath, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ByolError(f"--weights {wpath}: not a state_dict file ({type(exc).__name__})") from None
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "heads.", "head."))}
        own = enc.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            what = (f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else
                    f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else
                    f"{len(shapes)} tensors of another shape (e.g. {shapes[0]})")
            raise ByolError(f"--weights {wpath} does not fit torchvision {name}: {what}")
        enc.load_state_dict(state, strict=True)
        ident = f"torchvision:{name}:{file_fingerprint(wpath)}"
    if side.get("mean") and side.get("std"):
        mean, std, origin = list(side["mean"]), list(side["std"]), "the weights' sidecar"
    else:
        mean, std, origin = list(IMAGENET_MEAN), list(IMAGENET_STD), "ImageNet (torchvision convention)"
    return EncoderSource(
        encoder=enc, kind="torchvision", ident=ident, in_channels=in_ch,
        make_scratch=lambda: make(a.seed + 1),
        meta={"name": name, "width": 1.0, "small_stem": small, "in_channels": in_ch, "options": {}},
        mean=mean, std=std, stats_from=origin, size=side.get("view_size"),
    )


def _first_conv_channels(model) -> int:
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3

"""Exporting a (pretrained) backbone: torchvision state_dict, safetensors, ONNX.

Every format gets a JSON sidecar (``<out>.json``, same stem) describing the backbone and its input:
``backbone`` (name, width, small_stem, in_channels, options), ``feature_dim``, ``mean``/``std``
(per-channel, [0, 1] pixel units) and ``view_size`` (the input size it was trained at). Inputs are
float ``[B, C, view_size, view_size]`` images scaled to [0, 1] and normalised ``(x - mean) / std``;
outputs are the pooled features ``[B, feature_dim]``.

**torchvision**: ``byol``'s ResNets use torchvision's module names, so at width 1 with the standard
stem the state_dict loads with ``strict=True`` into ``torchvision.models.resnet18()`` (``34``,
``50``) whose ``fc`` is replaced by ``nn.Identity()``. For ``small_stem`` (and/or 1 input channel)
the torchvision model needs the same stem: ``conv1 = nn.Conv2d(C, 64, 3, 1, 1, bias=False)`` and
``maxpool = nn.Identity()``; :func:`torchvision_resnet` builds exactly that. Width multipliers other
than 1 have no torchvision equivalent (the state_dict still loads into ``byol.models.build_backbone``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from byol.atomic import atomic_write
from byol.errors import ByolError
from byol.models.tv_resnets import torchvision_resnet  # noqa: F401 (re-exported)

__all__ = [
    "backbone_meta",
    "export_onnx",
    "save_safetensors",
    "save_torchvision",
    "sidecar_path",
    "torchvision_resnet",
]

ONNX_HINT = "ONNX export needs the optional extra: pip install byol[onnx]  (onnx and onnxruntime)"


def sidecar_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".json") if out.suffix else out.with_name(out.name + ".json")


def backbone_meta(
    encoder: nn.Module,
    *,
    backbone: str,
    width: float = 1.0,
    small_stem: bool = False,
    in_channels: int,
    options: dict[str, Any] | None = None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    view_size: int,
    source: str = "",
) -> dict[str, Any]:
    """The sidecar's content (see module docstring); ``mean``/``std`` None (null) when unknown."""
    feature_dim = getattr(encoder, "feature_dim", None)
    return {
        "format_version": 1,
        "backbone": {
            "name": backbone,
            "width": float(width),
            "small_stem": bool(small_stem),
            "in_channels": int(in_channels),
            "options": dict(options or {}),
        },
        "feature_dim": int(feature_dim) if feature_dim is not None else None,
        "mean": None if mean is None else [float(m) for m in mean],
        "std": None if std is None else [float(s) for s in std],
        "view_size": int(view_size),
        "input": "float [B, C, view_size, view_size]: pixels in [0, 1], then (x - mean) / std",
        "output": "pooled features [B, feature_dim]",
        "source": source,
        "torchvision_loadable": backbone.startswith("resnet") and float(width) == 1.0,
    }


def _write_sidecar(out: Path, meta: dict[str, Any], fmt: str) -> Path:
    side = sidecar_path(out)
    return atomic_write(side, json.dumps({**meta, "format": fmt, "file": out.name}, indent=2))


def _state(encoder: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}


def save_torchvision(encoder: nn.Module, out: str | Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """``torch.save`` of the backbone's state_dict (torchvision key names for ResNets) + sidecar."""
    state = _state(encoder)
    out = atomic_write(out, lambda f: torch.save(state, f))
    return out, _write_sidecar(out, meta, "torchvision")


def save_safetensors(encoder: nn.Module, out: str | Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """``safetensors.torch.save`` of the state_dict (the sidecar also goes in the header metadata)."""
    from safetensors.torch import save

    out = atomic_write(out, save(_state(encoder), metadata={"byol": json.dumps(meta)}))
    return out, _write_sidecar(out, meta, "safetensors")


def _onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ByolError(ONNX_HINT) from None
    return onnxruntime


def export_onnx(
    encoder: nn.Module,
    out: str | Path,
    meta: dict[str, Any],
    *,
    opset: int = 17,
    verify: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
) -> tuple[Path, Path, float | None]:
    """Export to ONNX (dynamic batch axis) and, with ``verify``, run it in onnxruntime on random
    inputs: raises :class:`ByolError` if any output differs from torch by more than ``atol``.
    Returns ``(onnx path, sidecar path, max abs difference or None)``."""
    ort = _onnx_modules()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    c, s = int(meta["backbone"]["in_channels"]), int(meta["view_size"])
    model = _Exportable(encoder).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, s, s, generator=g)
    kwargs: dict[str, Any] = dict(input_names=["images"], output_names=["features"], opset_version=opset)
    try:
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)

        kwargs.update(dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    except ImportError:  # the TorchScript-based exporter ships with torch itself
        kwargs.update(dynamo=False, dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(out), **kwargs)
    side = _write_sidecar(out, meta, "onnx")
    diff = None
    if verify:
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        xv = torch.randn(3, c, s, s, generator=g)
        with torch.no_grad():
            ref = model(xv).numpy()
        got = sess.run(None, {"images": xv.numpy()})[0]
        diff = float(abs(got - ref).max())
        if not diff <= atol:
            raise ByolError(f"ONNX check failed: onnxruntime output differs from torch by {diff:.3g} (> {atol:g})")
    return out, side, diff


class _Exportable(nn.Module):
    """The backbone with its output flattened to ``[B, D]`` (and a copy in eval mode on CPU)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        import copy

        self.encoder = copy.deepcopy(encoder).cpu().eval()

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.encoder(x), 1)

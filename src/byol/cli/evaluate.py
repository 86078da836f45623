"""``byol eval <protocol>``, ``byol embed``, ``byol export``, ``byol report``.

This module turns command-line flags into explicit arguments for :mod:`byol.eval` and
:mod:`byol.reports`: every command builds a :class:`~byol.eval.encoders.SourceSpec` and
:class:`~byol.eval.data.DataOptions` from its flags, calls :func:`byol.eval.context.prepare` once, runs
one protocol of :mod:`byol.eval.protocols` and prints what it returned. The ``eval`` subcommands are the
protocols' registry (:mod:`byol.eval.protocols.registry`): each brings its own flags, settings and
printed line, and shares the encoder, data and output flags of :func:`_common_args`. Heavy imports (torch,
torchvision) happen inside the command functions, so ``byol --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from byol.errors import ConfigError

if TYPE_CHECKING:
    from byol.eval.context import EvalContext
    from byol.eval.encoders import SourceSpec


# ----------------------------------------------------------------------------------------------
# argument parsing


def _encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="RUN_DIR|FILE.pt",
                     help="a run directory (uses checkpoints/last.pt) or a checkpoint file")
    src.add_argument("--random-init", nargs="?", const=True, default=None, metavar="RUN_DIR",
                     help="a randomly initialised byol backbone (the random baseline): the architecture and inputs "
                          "(channels, view size, mean/std) of RUN_DIR when given, else --backbone/--width/--small-stem")
    src.add_argument("--raw-pixels", nargs="?", const=True, default=None, metavar="RUN_DIR",
                     help="the images' pixels as features (the floor below every encoder): RUN_DIR's inputs "
                          "(view size, mean/std) when given")
    src.add_argument("--torchvision", metavar="NAME",
                     help="a torchvision model, e.g. resnet18 (random weights unless --weights FILE)")
    g.add_argument("--backbone", default="resnet18", help="with --random-init: backbone name (default resnet18)")
    g.add_argument("--width", type=float, default=1.0, help="with --random-init: width multiplier")
    g.add_argument("--small-stem", action="store_true", help="with --random-init: 3x3 stride-1 stem, no max-pool")
    g.add_argument("--in-channels", type=int, choices=(1, 3), default=None,
                   help="with --random-init: input channels (default: the data set's)")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="with --torchvision: a local state_dict to load (e.g. from `byol export`)")


def _common_args(p: argparse.ArgumentParser, *, dataset: bool = True) -> None:
    _encoder_args(p)
    if dataset:
        p.add_argument("--dataset", default=None,
                       help="data set name (fashion-mnist, cifar10, ...) or labeled image folder/.zip "
                            "(default: the run's pretraining data)")
    p.add_argument("--data-dir", default=None, help="where a named data set's files are")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (default: the run's data.cache_dir)")
    p.add_argument("--input-size", type=int, help="encoder input size (default: the run's view size, else the images')")
    p.add_argument("--image-size", dest="old_input_size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="where results go (default: RUN_DIR/eval/)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="for data sets without a test split: the stratified share of train held out as test")
    p.add_argument("--batch-size", type=int, default=512, help="feature-extraction batch size")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register ``eval``, ``embed``, ``export`` and ``report`` on the top-level subparsers."""
    from byol.eval.protocols import PROTOCOLS

    ev = sub.add_parser("eval", help=f"evaluate an encoder: {', '.join(PROTOCOLS)}")
    esub = ev.add_subparsers(dest="protocol", required=True)

    for proto in PROTOCOLS.values():
        p = esub.add_parser(proto.name, help=proto.help)
        _common_args(p, dataset=proto.dataset_flag)
        proto.add_arguments(p)
        p.set_defaults(func=cmd_protocol)

    p = sub.add_parser("embed", help="write frozen features of a data set (.npy) + index,path,label (.csv)")
    _common_args(p, dataset=False)
    p.add_argument("--data", required=True, help="image folder / .zip, or a data set name")
    p.add_argument("--split", default="train", help="split to embed (default train)")
    p.add_argument("--out", required=True, help="output .npy (a .csv with the same stem goes next to it)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export", help="export the backbone: torchvision state_dict, safetensors or ONNX")
    _common_args(p, dataset=False)
    p.add_argument("--format", choices=("torchvision", "safetensors", "onnx"), default="torchvision")
    p.add_argument("--out", default=None, help="output file (default OUT_DIR/encoder.pt|.safetensors|.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="one Markdown table (+ PNG bar chart) of the eval results of run directories, "
                                      "and their online kNN against training time")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="report.md", help="Markdown file (the chart goes next to it as .png)")
    p.add_argument("--no-plot", action="store_true")
    p.set_defaults(func=cmd_report)


# ----------------------------------------------------------------------------------------------
# flags -> library arguments


def _say(text: str) -> None:
    print(text, flush=True)


def _input_size(a: argparse.Namespace) -> int | None:
    """``--input-size``, or ``--image-size``: its old spelling here, with a note (elsewhere the decode size)."""
    if a.old_input_size is not None and a.input_size not in (None, a.old_input_size):
        raise ConfigError(f"--input-size {a.input_size} and --image-size {a.old_input_size} (its old spelling) differ")
    if a.old_input_size is not None:
        print("byol: note: --image-size is deprecated here, use --input-size (the encoder's input size; elsewhere "
              "--image-size is the decode size)", file=sys.stderr)
    return a.input_size or a.old_input_size


def _source_spec(a: argparse.Namespace) -> SourceSpec:
    from byol.eval.encoders import SourceSpec

    return SourceSpec(checkpoint=a.checkpoint, random_init=a.random_init or False, torchvision=a.torchvision,
                      raw_pixels=getattr(a, "raw_pixels", None) or False,
                      weights=a.weights, backbone=a.backbone, width=a.width, small_stem=a.small_stem,
                      in_channels=a.in_channels)


def _prepare(a: argparse.Namespace, dataset: str | None, *, split: str | None = None,
             transfer: bool = False) -> EvalContext:
    """The one set-up of every eval command; prints the input-adaptation line when there is one."""
    from byol.eval.context import prepare
    from byol.eval.data import DataOptions

    data = DataOptions(input_size=_input_size(a), data_dir=a.data_dir, cache_dir=a.cache_dir,
                       test_fraction=a.test_fraction)
    ctx = prepare(_source_spec(a), dataset, data=data, split=split, device=a.device, threads=a.threads, seed=a.seed,
                  out_dir=a.out_dir, feature_cache=not a.no_cache, batch_size=a.batch_size, log=_say)
    message = ctx.input_message(transfer)
    if message:
        _say(message)
    return ctx


# ----------------------------------------------------------------------------------------------
# commands


def cmd_protocol(a: argparse.Namespace) -> int:
    """``byol eval <protocol>``: its flags -> its settings (checked before anything loads), the shared set-up,
    then one printed line per outcome."""
    from byol.eval.protocols import protocol

    from byol.eval.floor import floor_line, has_batch_norm

    proto = protocol(a.protocol)
    settings = proto.settings(a)
    ctx = _prepare(a, getattr(a, "dataset", None), transfer=proto.transfer)
    if ctx.source.kind == "raw-pixels" and proto.trains_encoder(settings):
        raise ConfigError("raw pixels have no weights to fine-tune: evaluate them with `eval linear` or `eval knn`")
    # a random init is scored twice, with BN's initial and with recalibrated statistics (byol.eval.floor)
    variants = [ctx, ctx.recalibrated()] if ctx.source.kind == "random-init" and has_batch_norm(
        ctx.source.encoder) else [ctx]
    outcomes = []
    for c in variants:
        if len(variants) > 1:
            _say(f"{c.source.label}:" if c.variant else f"{c.source.label}, initial BN statistics:")
        for out in proto.run(c, settings, log=_say):
            _say(proto.line(c, settings, out))
            outcomes.append(out)
    half = len(outcomes) // 2
    for first, second in zip(outcomes[:half], outcomes[half:]) if len(variants) > 1 else ():
        _say(floor_line(first.card["metrics"], second.card["metrics"]))
    return 0


def cmd_embed(a: argparse.Namespace) -> int:
    from byol.eval.protocols import write_embedding

    ctx = _prepare(a, a.data, split=a.split)
    npy, csv_path, shape = write_embedding(ctx, a.out)
    _say(f"embedded {len(ctx.data.train)} images -> {npy} {shape} and {csv_path}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from byol.eval.context import default_out_dir
    from byol.eval.encoders import load_source
    from byol.models import torchvision_resnet
    from byol.models.export import backbone_meta, export_onnx, save_safetensors, save_torchvision

    if a.format == "onnx":
        from byol.models.export import _onnx_modules

        _onnx_modules()  # fail before loading anything if the extra is missing
    src = load_source(_source_spec(a), seed=a.seed, data_channels=a.in_channels)
    mean, std = src.mean, src.std
    if mean is None or std is None:
        _say("note: this encoder has no training statistics: the sidecar's mean/std are null")
    size = _input_size(a) or src.size or 224
    meta = backbone_meta(src.encoder, backbone=src.meta["name"], width=src.meta["width"],
                         small_stem=src.meta["small_stem"], in_channels=src.in_channels,
                         options=src.meta.get("options"), mean=mean, std=std, view_size=size,
                         source=src.config.get("_checkpoint_path", src.ident))
    ext = {"torchvision": ".pt", "safetensors": ".safetensors", "onnx": ".onnx"}[a.format]
    out_dir = Path(a.out_dir) if a.out_dir else default_out_dir(src)
    out = Path(a.out) if a.out else out_dir.parent / "export" / f"encoder{ext}"
    src.encoder.cpu().eval()
    if a.format == "torchvision":
        path, side = save_torchvision(src.encoder, out, meta)
        name = src.meta["name"]
        if meta["torchvision_loadable"] and src.kind != "torchvision":
            tv = torchvision_resnet(name, small_stem=src.meta["small_stem"], in_channels=src.in_channels)
            tv.load_state_dict(src.encoder.state_dict(), strict=True)  # the claim below, checked
            if src.meta["small_stem"] or src.in_channels != 3:
                how = (f"byol.models.torchvision_resnet('{name}', small_stem={src.meta['small_stem']}, "
                       f"in_channels={src.in_channels}) (torchvision {name} with fc=Identity"
                       + (", conv1 3x3 stride 1, maxpool=Identity" if src.meta["small_stem"] else "")
                       + (f", conv1 with {src.in_channels} input channel(s)" if src.in_channels != 3 else "") + ")")
            else:
                how = f"torchvision.models.{name}() with fc = nn.Identity()"
            _say(f"wrote {path} (+ {side.name}): loads with strict=True into {how}")
        elif src.kind == "torchvision":
            _say(f"wrote {path} (+ {side.name}): torchvision {name} state_dict without its classifier")
        else:
            _say(f"wrote {path} (+ {side.name}): not a torchvision architecture; rebuild with "
                 f"byol.models.build_backbone(**sidecar['backbone']) and load_state_dict")
    elif a.format == "safetensors":
        path, side = save_safetensors(src.encoder, out, meta)
        _say(f"wrote {path} (+ {side.name})")
    else:
        path, side, diff = export_onnx(src.encoder, out, meta, seed=a.seed)
        _say(f"wrote {path} (+ {side.name}); onnxruntime output matches torch (max abs diff {diff:.2g})")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from byol.reports.tables import build_report

    table, md, png = build_report(a.runs, a.out, png=not a.no_plot)
    print(table)
    _say(f"\nwrote {md}" + (f" and {png}" if png else ""))
    return 0

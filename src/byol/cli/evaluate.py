"""``byol eval linear|knn|finetune|transfer``, ``byol embed``, ``byol export``, ``byol report``.

This module turns command-line flags into explicit arguments for :mod:`byol.eval` and
:mod:`byol.reports`: every command builds a :class:`~byol.eval.encoders.SourceSpec` and
:class:`~byol.eval.data.DataOptions` from its flags, calls :func:`byol.eval.context.prepare` once, runs
one protocol of :mod:`byol.eval.protocols` and prints what it returned. Heavy imports (torch,
torchvision) happen inside the command functions, so ``byol --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byol.errors import ConfigError

if TYPE_CHECKING:
    from byol.eval.context import EvalContext
    from byol.eval.finetune import FinetuneSettings
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


def _finetune_args(p: argparse.ArgumentParser, *, labels_default: list[str], steps_default: int | None) -> None:
    # Every default is None (False for switches) so that a flag the user gave can be told from one they did
    # not; the defaults (FinetuneSettings' and these) are applied in _finetune_settings.
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--labels", nargs="+", default=None, metavar="SPEC",
                   help="labeled share(s) of train: 1%%, 10%%, 100%% or a count like 500 "
                        f"(default: {' '.join(labels_default).replace('%', '%%')})")
    g.add_argument("--lrs", nargs="+", type=float, default=None,
                   help="learning-rate grid, chosen on the validation split (default 0.01 0.03 0.1 0.3)")
    g.add_argument("--weight-decays", nargs="+", type=float, default=None, help="weight-decay grid (default 0)")
    g.add_argument("--epochs", type=float, default=None,
                   help="epochs over the labeled subset" + ("" if steps_default else " (default 30)"))
    g.add_argument("--steps", type=int, default=None,
                   help="total optimizer steps instead of --epochs"
                        + (f" (default {steps_default} when neither is given)" if steps_default else ""))
    g.add_argument("--ft-batch-size", type=int, default=None, help="fine-tuning batch size (default 128)")
    g.add_argument("--val-per-class", type=int, default=None,
                   help="validation images per class (default: labels per class, at least 10)")
    g.add_argument("--no-augment", action="store_true", help="no random crop + flip while fine-tuning")
    g.add_argument("--no-baseline", action="store_true", help="skip the supervised-from-scratch baseline")
    p.set_defaults(labels_default=labels_default, steps_default=steps_default)


#: the fine-tuning flags (attribute, flag): an error with ``eval transfer --mode linear``
_FINETUNE_ONLY = (("labels", "--labels"), ("lrs", "--lrs"), ("weight_decays", "--weight-decays"),
                  ("epochs", "--epochs"), ("steps", "--steps"), ("ft_batch_size", "--ft-batch-size"),
                  ("val_per_class", "--val-per-class"), ("no_augment", "--no-augment"),
                  ("no_baseline", "--no-baseline"))


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register ``eval``, ``embed``, ``export`` and ``report`` on the top-level subparsers."""
    ev = sub.add_parser("eval", help="evaluate an encoder: linear, knn, finetune, transfer")
    esub = ev.add_subparsers(dest="protocol", required=True)

    p = esub.add_parser("linear", help="frozen encoder + linear classifier: L-BFGS on features (default) "
                                       "or SGD on augmented crops (--protocol sgd)")
    _common_args(p)
    p.add_argument("--protocol", dest="linear_protocol", choices=("lbfgs", "sgd"), default="lbfgs",
                   help="lbfgs (default): logistic regression on un-augmented features, l2 chosen on a val split "
                        "(the paper's transfer protocol); sgd: a linear layer trained with SGD on random "
                        "crop + flip views (the paper's ImageNet protocol)")
    p.add_argument("--l2-grid", choices=("default", "paper"), default=None,
                   help="--protocol lbfgs: default: 6 values in [1e-6, 0.1]; paper: 45 values in [1e-6, 1e5]")
    g = p.add_argument_group("--protocol sgd")
    g.add_argument("--epochs", type=float, default=None, help="epochs over train (default 10; paper 80)")
    g.add_argument("--sgd-batch-size", type=int, default=None, help="SGD batch size (default 256; paper 1024)")
    g.add_argument("--lrs", nargs="+", type=float, default=None, metavar="LR",
                   help="base learning-rate grid, lr = base * batch / 256, chosen on a val split "
                        "(default: the paper's 0.4 0.3 0.2 0.1 0.05)")
    g.add_argument("--crop-scale", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                   help="area range of the random resized crop (default 0.08 1)")
    g.add_argument("--no-augment", action="store_true", help="train on the un-augmented view (no crop + flip)")
    g.add_argument("--no-standardize", action="store_true",
                   help="feed raw features to the layer (default: standardised with training statistics)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_linear)

    p = esub.add_parser("knn", help="frozen features, weighted kNN (cosine)")
    _common_args(p)
    p.add_argument("--k", nargs="+", type=int, default=[20, 200])
    p.add_argument("--temperature", type=float, default=0.07)
    p.set_defaults(func=cmd_knn)

    p = esub.add_parser("finetune", help="semi-supervised: fine-tune on a class-balanced label subset (+ scratch baseline)")
    _common_args(p)
    _finetune_args(p, labels_default=["1%", "10%"], steps_default=None)
    p.set_defaults(func=cmd_finetune)

    p = esub.add_parser("transfer", help="evaluate on another data set: linear or fine-tune")
    _common_args(p, dataset=False)
    p.add_argument("--to", required=True, dest="dataset", metavar="DATASET", help="target data set or folder")
    p.add_argument("--mode", choices=("linear", "finetune"), default="linear")
    p.add_argument("--l2-grid", choices=("default", "paper"), default=None,
                   help="--mode linear: default: 6 values in [1e-6, 0.1]; paper: 45 values in [1e-6, 1e5]")
    _finetune_args(p, labels_default=["100%"], steps_default=2000)
    p.set_defaults(func=cmd_transfer)

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

    p = sub.add_parser("report", help="one Markdown table (+ PNG bar chart) of the eval results of run directories")
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
        _say("note: --image-size is deprecated here, use --input-size (the encoder's input size; elsewhere "
             "--image-size is the decode size)")
    return a.input_size or a.old_input_size


def _source_spec(a: argparse.Namespace) -> SourceSpec:
    from byol.eval.encoders import SourceSpec

    return SourceSpec(checkpoint=a.checkpoint, random_init=a.random_init or False, torchvision=a.torchvision,
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


def _top5(res: dict[str, Any]) -> str:
    return f", top-5 {res['top5']:.2f}%" if "top5" in res else ""


def _sizes(ctx: EvalContext) -> str:
    return f"{len(ctx.data.train)} train / {len(ctx.data.test)} test"


# ----------------------------------------------------------------------------------------------
# commands


def _linear(a: argparse.Namespace, protocol: str) -> int:
    from byol.eval.protocols import run_linear

    ctx = _prepare(a, a.dataset, transfer=protocol.startswith("transfer"))
    out = run_linear(ctx, protocol=protocol, l2_grid=getattr(a, "l2_grid", None) or "default")
    res = out.result
    _say(f"{protocol} on {ctx.data.name}: top-1 {res['top1']:.2f}%{_top5(res)} (l2={res['l2']:g}, {_sizes(ctx)}); "
         f"card: {out.path}")
    return 0


_SGD_ONLY = (("epochs", "--epochs"), ("sgd_batch_size", "--sgd-batch-size"), ("lrs", "--lrs"),
             ("crop_scale", "--crop-scale"), ("no_augment", "--no-augment"), ("no_standardize", "--no-standardize"))


def cmd_linear(a: argparse.Namespace) -> int:
    if getattr(a, "linear_protocol", "lbfgs") == "sgd":
        return _linear_sgd(a, "linear-sgd")
    given = _given(a, _SGD_ONLY)
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to `--protocol sgd` (this is --protocol lbfgs)")
    return _linear(a, "linear")


def _linear_sgd(a: argparse.Namespace, protocol: str) -> int:
    """``eval linear --protocol sgd``: the paper's ImageNet linear protocol (see byol.eval.linear_sgd)."""
    from byol.eval.linear_sgd import LinearSGDSettings
    from byol.eval.protocols import run_linear_sgd

    if a.l2_grid is not None:
        raise ConfigError("--l2-grid only applies to --protocol lbfgs; --protocol sgd chooses among --lrs")
    d = LinearSGDSettings()
    settings = LinearSGDSettings(
        lrs=tuple(a.lrs) if a.lrs else d.lrs,
        epochs=a.epochs if a.epochs is not None else d.epochs,
        batch_size=a.sgd_batch_size if a.sgd_batch_size is not None else d.batch_size,
        crop_scale=tuple(a.crop_scale) if a.crop_scale else d.crop_scale,
        augment=not a.no_augment, standardize=not a.no_standardize,
        eval_batch_size=max(1, a.batch_size),
    )
    settings.validate()  # before loading anything
    ctx = _prepare(a, a.dataset)
    out = run_linear_sgd(ctx, settings, protocol=protocol, progress=not a.no_progress, log=_say)
    res = out.result
    _say(f"{protocol} on {ctx.data.name}: top-1 {res['top1']:.2f}%{_top5(res)} (base lr {res['lr']:g}, "
         f"{res['steps']} steps; {_sizes(ctx)}); card: {out.path}")
    return 0


def cmd_knn(a: argparse.Namespace) -> int:
    from byol.eval.protocols import run_knn

    if not a.k or min(a.k) < 1:
        raise ConfigError(f"--k must be positive integers, got {a.k}")
    ctx = _prepare(a, a.dataset)
    out = run_knn(ctx, k=a.k, temperature=a.temperature)
    accs = ", ".join(f"k={k[1:]}: {v:.2f}%" for k, v in out.result.items())
    _say(f"knn on {ctx.data.name}: {accs}; card: {out.path}")
    return 0


def _given(a: argparse.Namespace, flags: tuple[tuple[str, str], ...]) -> list[str]:
    """The ``flags`` the user gave (their value is not the None / False that stands for "not given")."""
    return [flag for attr, flag in flags if getattr(a, attr, None) not in (None, False)]


def _finetune_settings(a: argparse.Namespace) -> FinetuneSettings:
    """The fine-tuning flags with their defaults filled in; ``--steps`` and ``--epochs`` are exclusive."""
    from byol.eval.finetune import FinetuneSettings

    if a.steps is not None and a.epochs is not None:
        raise ConfigError("--steps and --epochs both set how long to fine-tune: give one of them")
    d = FinetuneSettings()
    steps = a.steps if a.steps is not None else (a.steps_default if a.epochs is None else None)
    settings = FinetuneSettings(lrs=tuple(a.lrs or d.lrs), weight_decays=tuple(a.weight_decays or d.weight_decays),
                                epochs=a.epochs if a.epochs is not None else d.epochs, steps=steps,
                                batch_size=a.ft_batch_size if a.ft_batch_size is not None else d.batch_size,
                                augment=not a.no_augment)
    settings.validate()
    return settings


def _finetune(a: argparse.Namespace, protocol: str) -> int:
    from byol.eval.protocols import run_finetune
    from byol.eval.subsets import parse_labels

    specs = [parse_labels(s) for s in a.labels or a.labels_default]  # fail fast on a bad --labels
    settings = _finetune_settings(a)
    ctx = _prepare(a, a.dataset, transfer=protocol.startswith("transfer"))
    for spec, out in zip(specs, run_finetune(ctx, specs, settings, protocol=protocol, val_per_class=a.val_per_class,
                                             baseline=not a.no_baseline, log=_say)):
        line = f" => labels {spec.text}: {ctx.source.label} top-1 {out.result['top1']:.2f}%"
        if "top5" in out.result:
            line += f" (top-5 {out.result['top5']:.2f}%)"
        if out.card["baseline"]:
            line += f"; scratch top-1 {out.card['baseline']['metrics']['top1']:.2f}%"
        _say(line + f"; card: {out.path}")
    return 0


def cmd_finetune(a: argparse.Namespace) -> int:
    return _finetune(a, "finetune")


def cmd_transfer(a: argparse.Namespace) -> int:
    if a.mode == "linear":
        given = _given(a, _FINETUNE_ONLY)
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to `--mode finetune` (this is --mode linear)")
        return _linear(a, "transfer-linear")
    if a.l2_grid is not None:
        raise ConfigError("--l2-grid only applies to `--mode linear`; --mode finetune chooses among --lrs")
    return _finetune(a, "transfer-finetune")


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

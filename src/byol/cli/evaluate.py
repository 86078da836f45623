"""``byol eval linear|knn|finetune|transfer``, ``byol embed``, ``byol export``, ``byol report``.

This module turns command-line flags into explicit arguments for :mod:`byol.eval` and
:mod:`byol.reports`; it is the only place that knows a run directory's config layout. Heavy imports
(torch, torchvision) happen inside the command functions, so ``byol --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from byol.errors import ConfigError

from byol.cli.evaldata import EvalData, is_named_dataset, load_kwargs, same_source, load_eval_data, plan_for
from byol.cli.sources import EncoderSource, load_source


# ----------------------------------------------------------------------------------------------
# argument parsing


def _encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="RUN_DIR|FILE.pt",
                     help="a run directory (uses checkpoints/last.pt) or a checkpoint file")
    src.add_argument("--random-init", nargs="?", const=True, default=None, metavar="RUN_DIR",
                     help="a randomly initialised byol backbone (the random baseline): the architecture of RUN_DIR "
                          "when given, else --backbone/--width/--small-stem")
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
    p.add_argument("--image-size", type=int, default=None,
                   help="encoder input size (default: the run's view size, else the images' size)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="where results go (default: RUN_DIR/eval/)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="for data sets without a test split: the stratified share of train held out as test")
    p.add_argument("--batch-size", type=int, default=512, help="feature-extraction batch size")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def _finetune_args(p: argparse.ArgumentParser, *, labels_default: list[str], steps_default: int | None) -> None:
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--labels", nargs="+", default=labels_default, metavar="SPEC",
                   help="labeled share(s) of train: 1%%, 10%%, 100%% or a count like 500 "
                        f"(default: {' '.join(labels_default).replace('%', '%%')})")
    g.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.03, 0.1, 0.3],
                   help="learning-rate grid, chosen on the validation split (default 0.01 0.03 0.1 0.3)")
    g.add_argument("--weight-decays", nargs="+", type=float, default=[0.0], help="weight-decay grid (default 0)")
    g.add_argument("--epochs", type=float, default=30.0, help="epochs over the labeled subset (default 30)")
    g.add_argument("--steps", type=int, default=steps_default,
                   help="total optimizer steps; overrides --epochs" + (f" (default {steps_default})" if steps_default else ""))
    g.add_argument("--ft-batch-size", type=int, default=128, help="fine-tuning batch size (default 128)")
    g.add_argument("--val-per-class", type=int, default=None,
                   help="validation images per class (default: labels per class, at least 10)")
    g.add_argument("--no-augment", action="store_true", help="no random crop + flip while fine-tuning")
    g.add_argument("--no-baseline", action="store_true", help="skip the supervised-from-scratch baseline")


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
    p.add_argument("--l2-grid", choices=("default", "paper"), default="default")
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
# output layout


def _out_dir(a: argparse.Namespace, src: EncoderSource) -> Path:
    if a.out_dir:
        return Path(a.out_dir)
    if src.run_dir is not None:
        return src.run_dir / "eval"
    name = src.ident.split(":")[0] + "-" + src.meta["name"] + ("" if src.meta.get("width", 1) == 1 else f"-w{src.meta['width']:g}")
    return Path("runs") / "baselines" / name / "eval"


def _feature_cache_dir(a: argparse.Namespace, src: EncoderSource, out_dir: Path) -> Path | None:
    if a.no_cache:
        return None
    return (src.run_dir / "eval" / "features") if src.run_dir is not None else out_dir / "features"


def _setup(a: argparse.Namespace):
    import torch

    from byol.runtime.device import resolve_device

    if a.threads:
        torch.set_num_threads(a.threads)
    return resolve_device(a.device)


def _features(a, src, plan, data: EvalData, device, out_dir: Path):
    from byol.eval.cache import features_for

    cache = _feature_cache_dir(a, src, out_dir)
    carved = "carved" if data.test_note.startswith("held out") else "native"
    extra = {"channel_op": plan.channel_op, "test": carved, "test_fraction": a.test_fraction if carved == "carved" else None}
    out, hits = [], 0
    for split, ims in (("train", data.train), ("test", data.test)):
        f, hit = features_for(src.encoder, plan.apply(ims.images), cache_dir=cache, encoder_id=src.ident,
                              dataset=data.key, split=split, size=plan.size, mean=plan.mean, std=plan.std,
                              extra=extra, batch_size=a.batch_size, device=device)
        out.append(f)
        hits += hit
    return out[0], out[1], hits


def _splits(data: EvalData, **more) -> dict[str, Any]:
    return {"train": len(data.train), "test": len(data.test), "test_from": data.test_note, **more}


def _say(text: str) -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------------------------
# commands


def _linear(a: argparse.Namespace, protocol: str) -> int:
    from byol.eval import linear_eval, paper_grid
    from byol.eval.cards import card_filename, make_card, write_card

    device = _setup(a)
    t0 = time.perf_counter()
    probe = _probe_channels(a)
    src = load_source(a, data_channels=probe)
    data = load_eval_data(a, src, a.dataset)
    plan = plan_for(a, src, data.train, data.decoded_size)
    if protocol.startswith("transfer") or plan.changes:
        _say(("transfer: " if protocol.startswith("transfer") else "input: ") + plan.message(data.name))
    out_dir = _out_dir(a, src)
    ftr, fte, hits = _features(a, src, plan, data, device, out_dir)
    t1 = time.perf_counter()
    l2_grid = getattr(a, "l2_grid", None) or "default"
    res = linear_eval(ftr, data.train.labels, fte, data.test.labels, l2_grid=paper_grid() if l2_grid == "paper" else None,
                      seed=a.seed, num_classes=data.num_classes)
    t2 = time.perf_counter()
    metrics = {k: res[k] for k in ("top1", "top5") if k in res}
    card = make_card(
        protocol=protocol, metrics=metrics, dataset=data.name,
        splits=_splits(data, val_fraction_for_l2=0.1),
        hyperparameters={"labels": "100%", "l2": res["l2"], "l2_grid": l2_grid,
                         "val_top1_by_l2": {f"{k:g}": v for k, v in res["val_top1_by_l2"].items()},
                         "size": plan.size, "feature_dim": res["dim"], "standardized": True},
        encoder=src.card_info(), seed=a.seed,
        timing={"features_seconds": t1 - t0, "fit_seconds": t2 - t1, "seconds": t2 - t0},
        conversion=plan.message(data.name), source_dataset=src.source_dataset, feature_cache_hits=hits,
    )
    path = write_card(out_dir, card, card_filename(protocol, data.name))
    top5 = f", top-5 {metrics['top5']:.2f}%" if "top5" in metrics else ""
    _say(f"{protocol} on {data.name}: top-1 {metrics['top1']:.2f}%{top5} (l2={res['l2']:g}, "
         f"{len(data.train)} train / {len(data.test)} test); card: {path}")
    return 0


def _probe_channels(a: argparse.Namespace) -> int | None:
    """For --random-init without --in-channels: the data set's channel count (cheap for named sets)."""
    if not getattr(a, "random_init", False) or a.in_channels:
        return None
    ds = getattr(a, "dataset", None) or getattr(a, "data", None)
    if not ds:
        return None
    from byol.data import load_images

    kw = dict(image_size=a.image_size if not is_named_dataset(ds) else None, data_dir=a.data_dir, cache_dir=a.cache_dir,
              progress=False)
    return load_images(ds, getattr(a, "split", "train"), **kw).num_channels


_SGD_ONLY = (("epochs", "--epochs"), ("sgd_batch_size", "--sgd-batch-size"), ("lrs", "--lrs"),
             ("crop_scale", "--crop-scale"), ("no_augment", "--no-augment"), ("no_standardize", "--no-standardize"))


def cmd_linear(a: argparse.Namespace) -> int:
    if getattr(a, "linear_protocol", "lbfgs") == "sgd":
        return _linear_sgd(a, "linear-sgd")
    given = [flag for attr, flag in _SGD_ONLY if getattr(a, attr, None) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to `--protocol sgd` (this is --protocol lbfgs)")
    return _linear(a, "linear")


def _linear_sgd(a: argparse.Namespace, protocol: str) -> int:
    """``eval linear --protocol sgd``: the paper's ImageNet linear protocol (see byol.eval.linear_sgd)."""
    import torch

    from byol.eval.cards import card_filename, make_card, write_card
    from byol.eval.linear_sgd import LinearSGDSettings, linear_sgd_eval

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
    device = _setup(a)
    t0 = time.perf_counter()
    src = load_source(a, data_channels=_probe_channels(a))
    data = load_eval_data(a, src, a.dataset)
    plan = plan_for(a, src, data.train, data.decoded_size)
    if plan.changes:
        _say("input: " + plan.message(data.name))
    out_dir = _out_dir(a, src)
    train = (plan.apply(torch.as_tensor(data.train.images)), torch.as_tensor(data.train.labels))
    test = (plan.apply(torch.as_tensor(data.test.images)), torch.as_tensor(data.test.labels))
    aug = (f"random resized crop (area {settings.crop_scale[0]:g}-{settings.crop_scale[1]:g}) + flip"
           if settings.augment else "none")
    grid = " ".join(f"{v:g}" for v in settings.lrs)
    _say(f"{protocol} on {data.name}: {len(data.train)} train, {len(data.test)} test; {settings.epochs:g} epochs, "
         f"batch {settings.batch_size}, base lrs {grid}"
         + (f" (chosen on a stratified {settings.val_fraction:.0%} of train, then refit on all of it)"
            if len(settings.lrs) > 1 else "") + f"; train augmentation: {aug}")
    res = linear_sgd_eval(src.encoder, train, test, num_classes=data.num_classes, size=plan.size, mean=plan.mean,
                          std=plan.std, settings=settings, seed=a.seed, device=device,
                          progress=not a.no_progress, log=_say)
    metrics = {k: res[k] for k in ("top1", "top5") if k in res}
    splits = _splits(data, val=res["n_val"])
    if res["n_val"]:
        splits["val_from"] = (f"stratified {settings.val_fraction:.0%} of train (seed {a.seed}), "
                              + ("then refit on all of train" if res["refit"] else "not refitted"))
    card = make_card(
        protocol=protocol, metrics=metrics, dataset=data.name, splits=splits,
        hyperparameters={"labels": "100%", "lr": res["lr"], "lr_effective": res["lr_effective"],
                         "lr_grid": list(settings.lrs), "lr_scaling": "base * batch_size / 256",
                         "val_top1_by_lr": {f"{k:g}": v for k, v in res["val_top1_by_lr"].items()},
                         "epochs": settings.epochs, "steps": res["steps"], "batch_size": settings.batch_size,
                         "optimizer": "sgd-nesterov", "momentum": settings.momentum, "schedule": "cosine",
                         "weight_decay": settings.weight_decay, "augment": aug, "test_view": "whole image resized",
                         "standardized": settings.standardize, "bn": "eval mode (frozen encoder)",
                         "size": plan.size, "feature_dim": res["dim"], "final_loss": res["final_loss"]},
        encoder=src.card_info(), seed=a.seed,
        timing={"seconds": time.perf_counter() - t0, "fit_seconds": res["seconds"]},
        conversion=plan.message(data.name), source_dataset=src.source_dataset,
    )
    path = write_card(out_dir, card, card_filename(protocol, data.name))
    top5 = f", top-5 {metrics['top5']:.2f}%" if "top5" in metrics else ""
    _say(f"{protocol} on {data.name}: top-1 {metrics['top1']:.2f}%{top5} (base lr {res['lr']:g}, {res['steps']} steps; "
         f"{len(data.train)} train / {len(data.test)} test); card: {path}")
    return 0


def cmd_knn(a: argparse.Namespace) -> int:
    from byol.eval import knn_eval
    from byol.eval.cards import card_filename, make_card, write_card

    if not a.k or min(a.k) < 1:
        raise ConfigError(f"--k must be positive integers, got {a.k}")
    device = _setup(a)
    t0 = time.perf_counter()
    src = load_source(a, data_channels=_probe_channels(a))
    data = load_eval_data(a, src, a.dataset)
    plan = plan_for(a, src, data.train, data.decoded_size)
    if plan.changes:
        _say("input: " + plan.message(data.name))
    out_dir = _out_dir(a, src)
    ftr, fte, hits = _features(a, src, plan, data, device, out_dir)
    t1 = time.perf_counter()
    res = knn_eval(ftr, data.train.labels, fte, data.test.labels, k=a.k, temperature=a.temperature,
                   num_classes=data.num_classes)
    t2 = time.perf_counter()
    card = make_card(
        protocol="knn", metrics=res, dataset=data.name, splits=_splits(data),
        hyperparameters={"labels": "100%", "k": list(a.k), "temperature": a.temperature, "weighting": "exp",
                         "similarity": "cosine", "size": plan.size},
        encoder=src.card_info(), seed=a.seed,
        timing={"features_seconds": t1 - t0, "fit_seconds": t2 - t1, "seconds": t2 - t0},
        conversion=plan.message(data.name), source_dataset=src.source_dataset, feature_cache_hits=hits,
    )
    path = write_card(out_dir, card, card_filename("knn", data.name))
    accs = ", ".join(f"k={k[1:]}: {v:.2f}%" for k, v in res.items())
    _say(f"knn on {data.name}: {accs}; card: {path}")
    return 0


def _finetune(a: argparse.Namespace, protocol: str) -> int:
    import torch

    from byol.eval.cards import card_filename, make_card, write_card
    from byol.eval.finetune import FinetuneSettings, finetune_eval
    from byol.eval.subsets import make_label_split, parse_labels

    specs = [parse_labels(s) for s in a.labels]  # fail fast on a bad --labels
    settings = FinetuneSettings(lrs=tuple(a.lrs), weight_decays=tuple(a.weight_decays), epochs=a.epochs,
                                steps=a.steps, batch_size=a.ft_batch_size, augment=not a.no_augment)
    settings.validate()
    device = _setup(a)
    src = load_source(a, data_channels=_probe_channels(a))
    data = load_eval_data(a, src, a.dataset)
    plan = plan_for(a, src, data.train, data.decoded_size)
    if protocol.startswith("transfer") or plan.changes:
        _say(("transfer: " if protocol.startswith("transfer") else "input: ") + plan.message(data.name))
    out_dir = _out_dir(a, src)
    xall = plan.apply(torch.as_tensor(data.train.images))
    yall = data.train.labels
    test = (plan.apply(torch.as_tensor(data.test.images)), data.test.labels)
    kw = dict(num_classes=data.num_classes, size=plan.size, mean=plan.mean, std=plan.std, settings=settings,
              seed=a.seed, device=device)
    for spec in specs:
        t0 = time.perf_counter()
        split = make_label_split(yall, spec, seed=a.seed, val_per_class=a.val_per_class)
        sub_path = out_dir / f"labels-{Path(card_filename(protocol, data.name, spec.tag)).stem}-seed{a.seed}.json"
        payload = split.to_json(dataset=data.name, test_from=data.test_note,
                                indices="positions in the data set's train split")
        payload["labeled"] = data.train_index[split.labeled].tolist()
        payload["val"] = data.train_index[split.val].tolist()
        if data.test_index is not None:
            payload["test"] = data.test_index.tolist()
        out_dir.mkdir(parents=True, exist_ok=True)
        sub_path.write_text(json.dumps(payload))
        tr_idx = split.select_train
        train_t = (xall[tr_idx], yall[tr_idx])
        val_t = (xall[split.val], yall[split.val])
        _say(f"{protocol} on {data.name}, labels {spec.text}: {len(split.labeled)} labeled, {len(split.val)} val "
             f"({'held out of the labeled set, refit' if split.refit else 'from the unlabeled rest'}), "
             f"{len(test[0])} test; subset: {sub_path}")
        who = "BYOL" if src.kind == "checkpoint" else src.kind
        _say(f" {who} encoder:")
        res = finetune_eval(src.encoder, train_t, val_t, test, refit=split.refit, log=_say, **kw)
        baseline = None
        if not a.no_baseline:
            _say(" supervised from scratch (same architecture, random init):")
            bres = finetune_eval(src.make_scratch, train_t, val_t, test, refit=split.refit, log=_say, **kw)
            baseline = {"name": "scratch", "metrics": {k: bres[k] for k in ("top1", "top5") if k in bres},
                        "lr": bres["lr"], "weight_decay": bres["weight_decay"],
                        "val_top1_by_setting": bres["val_top1_by_setting"], "seconds": bres["seconds"]}
        metrics = {k: res[k] for k in ("top1", "top5") if k in res}
        card = make_card(
            protocol=protocol, metrics=metrics, dataset=data.name,
            splits=_splits(data, labeled=len(split.labeled), val=len(split.val), val_from=(
                "labeled subset (refit on all of it)" if split.refit else "complement of the labeled subset in train"),
                per_class=split.per_class),
            hyperparameters={"labels": spec.text, "lr": res["lr"], "weight_decay": res["weight_decay"],
                             "lr_grid": list(settings.lrs), "weight_decay_grid": list(settings.weight_decays),
                             "val_top1_by_setting": res["val_top1_by_setting"], "epochs": settings.epochs,
                             "steps": res["steps"], "batch_size": settings.batch_size, "optimizer": "sgd-nesterov",
                             "momentum": settings.momentum, "schedule": "cosine", "augment": settings.augment,
                             "bn": "train mode", "size": plan.size},
            encoder=src.card_info(), seed=a.seed, label_subset=str(sub_path),
            timing={"seconds": time.perf_counter() - t0, "byol_seconds": res["seconds"]},
            baseline=baseline, conversion=plan.message(data.name), source_dataset=src.source_dataset,
        )
        path = write_card(out_dir, card, card_filename(protocol, data.name, spec.tag))
        line = f" => labels {spec.text}: {who} top-1 {metrics['top1']:.2f}%"
        if "top5" in metrics:
            line += f" (top-5 {metrics['top5']:.2f}%)"
        if baseline:
            line += f"; scratch top-1 {baseline['metrics']['top1']:.2f}%"
        _say(line + f"; card: {path}")
    return 0


def cmd_finetune(a: argparse.Namespace) -> int:
    return _finetune(a, "finetune")


def cmd_transfer(a: argparse.Namespace) -> int:
    if a.mode == "linear":
        return _linear(a, "transfer-linear")
    return _finetune(a, "transfer-finetune")


def cmd_embed(a: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from byol.data import load_images
    from byol.eval.cache import features_for

    device = _setup(a)
    src = load_source(a, data_channels=_probe_channels(a))
    kw = load_kwargs(a, src, a.data)
    data = load_images(a.data, a.split, **kw)
    plan = plan_for(a, src, data, kw["image_size"] if not same_source(src, a.data) else None)
    if plan.changes:
        _say("input: " + plan.message(a.data))
    feats, _ = features_for(src.encoder, plan.apply(torch.as_tensor(data.images)), cache_dir=None,
                            encoder_id=src.ident, dataset=a.data, split=a.split, size=plan.size, mean=plan.mean,
                            std=plan.std, batch_size=a.batch_size, device=device)
    out = Path(a.out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats.numpy())
    csv_path = out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "label"])
        for i in range(len(data)):
            path = data.paths[i] if data.paths is not None else ""
            label = ""
            if data.labels is not None:
                y = int(data.labels[i])
                label = data.classes[y] if data.classes else str(y)
            w.writerow([i, path, label])
    _say(f"embedded {len(data)} images -> {out} {tuple(feats.shape)} and {csv_path}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from byol.models.export import backbone_meta, export_onnx, save_safetensors, save_torchvision
    from byol.models import torchvision_resnet

    if a.format == "onnx":
        from byol.models.export import _onnx_modules

        _onnx_modules()  # fail before loading anything if the extra is missing
    src = load_source(a, data_channels=a.in_channels)
    mean, std = src.mean, src.std
    if mean is None or std is None:
        _say("note: this encoder has no training statistics: the sidecar's mean/std are null")
    size = a.image_size or src.size or 224
    meta = backbone_meta(src.encoder, backbone=src.meta["name"], width=src.meta["width"],
                         small_stem=src.meta["small_stem"], in_channels=src.in_channels,
                         options=src.meta.get("options"), mean=mean, std=std, view_size=size,
                         source=src.config.get("_checkpoint_path", src.ident))
    ext = {"torchvision": ".pt", "safetensors": ".safetensors", "onnx": ".onnx"}[a.format]
    out = Path(a.out) if a.out else _out_dir(a, src).parent / "export" / f"encoder{ext}"
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
    from byol.reports.cards import build_report

    table, md, png = build_report(a.runs, a.out, png=not a.no_plot)
    print(table)
    _say(f"\nwrote {md}" + (f" and {png}" if png else ""))
    return 0

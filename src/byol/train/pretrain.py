"""Pretraining from a config: the composition root that turns a :class:`~byol.train.config.PretrainConfig` into
data, views, a method, an optimizer and a :class:`~byol.train.loop.Trainer`, and runs it.

This is the one library module that reads a whole config; everything it calls takes explicit arguments.
The CLI (``byol pretrain``, ``byol demo``), benchmarks and users' scripts all start runs through
:func:`run_pretrain`, so a run is built the same way everywhere.
"""

from __future__ import annotations

import functools
import shutil
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from byol.runtime import dist
from byol.augment import TwoViewAugment
from byol.config import DataConfig, check_batch, to_dict
from byol.data import ImageSet, load_images, normalization
from byol.data.batches import BatchSource, CachedImages
from byol.data.sizes import Sizes
from byol.data.stream import StreamSource, open_stream
from byol.data.streamloader import stream_loader
from byol.train.config import PretrainConfig, check_small_crops_path, fit_batch, stored_as_now, validate_pretrain
from byol.train.loop import LoopOptions, Trainer
from byol.errors import ConfigError, DataError
from byol.methods import build_method
from byol.methods.registry import check_multi_crop, method_class
from byol.models.factory import backbone_factory, build_encoder
from byol.train.monitor import KnnMonitor, knn_monitor, labeled_positions
from byol.optim.optimizers import build_optimizer
from byol.run.checkpoints import run_lock
from byol.run.resume import check_resume_sizes, finished, resume_checkpoint
from byol.run.files import (clear_run_files, env_info, last_record, write_config, write_run_files, write_skipped,
                            write_summary)
from byol.runtime.device import resolve_device, set_threads
from byol.train.verdict import random_init_verdict
from byol.eval.cards import remove_cards


def load_train_data(d: DataConfig, *, seed: int, progress: bool = True) -> ImageSet:
    """The pretraining images of ``d`` (``data.limit``: a seeded random subset)."""
    train = load_images(d.source, d.split, image_size=d.image_size, data_dir=d.data_dir, cache_dir=d.cache_dir,
                        download=d.download, progress=progress)
    if d.limit is not None and d.limit < len(train):
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 777))[: d.limit]
        train = train.subset(keep.sort().values)
    return train


def has_labels(images: ImageSet) -> bool:
    """Whether some of ``images`` have a label (a joined ``train+unlabeled`` split has -1 for the others)."""
    return images.labels is not None and len(labeled_positions(images.labels)) > 0


def make_monitor(cfg: PretrainConfig, train: ImageSet, size: int, mean, std, device) -> KnnMonitor | None:
    """The online kNN monitor of a run, or None (no labels, ``knn_bank: 0`` or ``knn_every: 0``).

    Queries are held out of train's labeled images, or come from ``data.eval_split`` when it is set and
    loads with labels (by default it is not: nothing is chosen or watched on the test split)."""
    d = cfg.data
    if d.knn_bank <= 0 or not has_labels(train) or not cfg.train.knn_every:
        return None
    eval_set: ImageSet | None = None
    if d.eval_split:
        try:
            with dist.main_first():
                eval_set = load_images(d.source, d.eval_split, image_size=d.image_size, data_dir=d.data_dir,
                                       cache_dir=d.cache_dir, download=d.download, progress=False)
        except DataError:
            eval_set = None
    have_eval = eval_set is not None and eval_set.labels is not None
    return knn_monitor(train.images, train.labels, bank=d.knn_bank, queries=d.knn_queries, size=size, mean=mean,
                       std=std, k=cfg.train.knn_k, device=device, seed=cfg.train.seed + 12345,
                       eval_images=eval_set.images if have_eval else None,
                       eval_labels=eval_set.labels if have_eval else None)


def _compile(method: torch.nn.Module, device: torch.device) -> None:
    # Only the forward (online + target on both views, and the loss) is compiled, as an instance
    # attribute: the state_dict keeps its keys, so checkpoints, resume and export are unchanged.
    # Off by default: on the CPU demo preset it ran slower than eager after a 76 s compile
    # (benchmarks/RESULTS.md section 7); it needs a C++ compiler on CPU.
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise ConfigError("train.compile on CPU needs a C++ compiler (c++, g++ or clang++) on PATH: install one "
                          "(e.g. apt-get install g++) or leave train.compile off")
    method.forward = torch.compile(method.forward)


@dataclass
class PretrainRun:
    """Everything :func:`build_pretrain` built, before training starts."""

    trainer: Trainer
    method: torch.nn.Module
    train: ImageSet
    augment: TwoViewAugment
    mean: list[float]
    std: list[float]
    sizes: Sizes  #: resolved once here, stored by the run (checkpoint, env.json) for what reads it later
    device: torch.device
    resolved: dict[str, Any]  #: the config written to config.yaml (sizes as asked: see ``sizes``)

    @property
    def size(self) -> int:
        """The views' size (the encoder's input)."""
        return self.sizes.view


def build_pretrain(cfg: PretrainConfig, run_dir: Path | None, *, fit: bool = False) -> PretrainRun:
    """Data, views, method, optimizer, monitor and trainer of ``cfg`` (seeded by ``train.seed``); ``fit``: a
    batch larger than the data shrinks to fit it, with a note (:func:`byol.train.config.fit_batch`)."""
    validate_pretrain(cfg)
    method_class(cfg.method.name)  # an unknown method is reported before any data is read
    check_multi_crop(cfg.method.name, cfg.views.small_crops)  # and one that takes no small views
    set_threads(cfg.train.threads)
    device = dist.local_device(resolve_device(cfg.train.device))
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    d = cfg.data
    progress = cfg.train.progress and dist.is_main()
    with dist.main_first():  # rank 0 fills the decode cache (or decodes the stream's sample) first
        stream = open_stream(d, cfg.views.specs, seed=cfg.train.seed, progress=progress)  # None: decode once
        train = load_train_data(d, seed=cfg.train.seed, progress=progress) if stream is None else stream.sample
    check_small_crops_path(cfg.views.small_crops, streamed=stream is not None)  # data.stream=auto may stream
    note = fit_batch(cfg, len(train if stream is None else stream), dist.world_size()) if fit else None
    if note and dist.is_main():
        warnings.warn(note, stacklevel=2)
    check_batch(cfg.optim.batch_size, cfg.optim.accum_steps, num_images=len(train if stream is None else stream))
    mean, std = normalization(d.source, train.images, d.mean, d.std)
    sizes = Sizes.resolve(decode=d.image_size, view=d.view_size, images=train.image_size)
    v = cfg.views
    augment = TwoViewAugment(*v.specs, sizes.view, mean, std, small_crops=v.small_crops, small_spec=v.small_spec,
                             small_size=v.small_size)
    method = build_method(cfg.method, backbone_factory(cfg.model, train.num_channels)).to(device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        _compile(method, device)
    monitor = make_monitor(cfg, train, sizes.view, mean, std, device)
    evaluate_every = cfg.train.knn_every if monitor is not None else 0.0
    options = LoopOptions.from_config(cfg.train, cfg.optim, evaluate_every=evaluate_every)
    opt = build_optimizer(cfg.optim.name, method.trainable_modules(), lr=options.peak_lr,
                          weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum, eta=cfg.optim.eta,
                          lr_mult=_predictor_lr_mult(cfg, method),
                          fixed_lr=method.fixed_lr_modules() if hasattr(method, "fixed_lr_modules") else ())
    data = _batch_source(train, stream, device, run_dir)
    resolved = to_dict(cfg)
    resolved["data"]["mean"], resolved["data"]["std"] = mean, std
    resolved["data"]["stream"] = "off" if stream is None else "on"
    trainer = Trainer(method, opt, augment, data, batch_size=cfg.optim.batch_size, device=device, options=options,
                      run_dir=run_dir, evaluate=monitor,
                      checkpoint_extra={"config": resolved, "sizes": sizes.to_dict(), "in_channels": train.num_channels,
                                        "classes": train.classes})
    return PretrainRun(trainer, method, train, augment, mean, std, sizes, device, resolved)


def _batch_source(train: ImageSet, stream: StreamSource | None, device: torch.device,
                  run_dir: Path | None) -> BatchSource:
    """The training loop's batches: the decoded images (small sets live on the accelerator), or the stream's
    loader (files found unusable while streaming, by any rank, rewrite the run's ``skipped_files.txt``: rank 0)."""
    if stream is not None:
        report = functools.partial(write_skipped, run_dir) if run_dir and dist.is_main() else None
        return stream_loader(stream, pin_memory=device.type == "cuda", report=report)
    images = train.images
    if device.type != "cpu" and images.numel() < 2 * 1024**3:
        images = torch.as_tensor(images).to(device)
    return CachedImages(images)


def _predictor_lr_mult(cfg: PretrainConfig, method: nn.Module) -> dict[nn.Module, float]:
    """``{predictor: optim.predictor_lr_mult}``; a multiplier for a method without a predictor is an error."""
    mult = cfg.optim.predictor_lr_mult
    if mult == 1.0:
        return {}
    predictor = getattr(method, "predictor", None)
    if not isinstance(predictor, nn.Module) or not any(True for _ in predictor.parameters()):
        raise ConfigError(f"optim.predictor_lr_mult={mult:g}: method {cfg.method.name!r} has no predictor "
                          "(a trained `predictor` module, e.g. BYOL's with method.use_predictor=true)")
    return {predictor: mult}


def run_verdict(cfg: PretrainConfig, run: PretrainRun, run_dir: Path) -> dict[str, Any]:
    """The trained encoder against the same architecture at random init (seed ``train.seed + 1``), by kNN
    on held-out training images with the run's inputs, and the collapse monitor's last reading in
    ``run_dir`` (:mod:`byol.train.verdict`); ``{"skipped": why}`` without labels or with ``train.verdict: false``."""
    if not cfg.train.verdict:
        return {"skipped": "train.verdict is false"}
    if not has_labels(run.train):
        return {"skipped": "the data has no labels"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed + 1)
        random_encoder = build_encoder(cfg.model, run.train.num_channels)
    return random_init_verdict(run.method.encoder, random_encoder.to(run.device), run.train.images, run.train.labels,
                               size=run.size, mean=run.mean, std=run.std, device=run.device, seed=cfg.train.seed,
                               name=type(run.method).__name__, collapse=last_record(run_dir, "z_std"))


def run_pretrain(cfg: PretrainConfig, run_dir: Path, *, resume: bool = False, allow_changes: bool = False,
                 fit_batch: bool = False) -> dict[str, Any]:
    """Build everything from ``cfg``, train in ``run_dir`` (``resume``: continue from its last.pt, whose
    stored config must equal ``cfg`` but for :data:`byol.run.resume.RESUME_SAFE_KEYS` changed with
    ``allow_changes``), then judge the encoder against random init (:func:`run_verdict`, ``verdict``).
    ``fit_batch`` (the CLI's default path): a batch larger than the data shrinks to fit it (:func:`build_pretrain`).

    Returns the engine's summary plus what was built (``method``, ``train``, ``mean``, ``std``, ``sizes``
    and ``size`` (its view size), ``device``, ``run_dir``); a resume of a finished run trains nothing and
    returns ``{"finished": True, "steps", "run_dir"}``. The run directory is locked while training (a second
    process is refused).

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this: it joins the process group for the run,
    all train one model, rank 0 alone writes into ``run_dir`` (lock, files, checkpoints, metrics, verdict).
    A resume reads ``last.pt`` on every rank (a file system shared by the nodes), whatever the number of
    processes that wrote it."""
    run_dir = Path(run_dir)
    with dist.process_group(dist.local_device(resolve_device(cfg.train.device))):
        main = dist.is_main()
        with run_lock(run_dir) if main else nullcontext():
            ckpt = resume_checkpoint(run_dir, to_dict(cfg), allow_changes, stored_as_now) if resume else None
            if ckpt is not None and finished(ckpt):
                return {"finished": True, "steps": ckpt["state"]["step"], "run_dir": run_dir}
            run = build_pretrain(cfg, run_dir, fit=fit_batch and ckpt is None)
            if ckpt is not None:
                check_resume_sizes(ckpt, run.sizes)
                run.trainer.load(ckpt)
                if main:
                    write_config(run_dir, run.resolved)  # what later checkpoints store (allowed changes included)
            elif main:
                clear_run_files(run_dir)  # a new run: nothing of an earlier one in run_dir is read as its own
                remove_cards(run_dir)
                write_run_files(run_dir, run.resolved, {**env_info(run.device), "world_size": dist.world_size(),
                                                        "views": run.augment.backend(run.device),
                                                        "sizes": run.sizes.to_dict()}, run.train.skipped,
                                run.train.skip_reasons)
            summary = run.trainer.fit()
            summary["verdict"] = run_verdict(cfg, run, run_dir) if main else {"skipped": "rank 0 judges the run"}
            if main:
                write_summary(run_dir, summary)
    summary.update(method=run.method, train=run.train, mean=run.mean, std=run.std, size=run.size,
                   sizes=run.sizes, device=run.device, run_dir=run_dir)
    return summary

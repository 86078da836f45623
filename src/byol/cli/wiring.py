"""Turn a :class:`~byol.config.PretrainConfig` into objects and run pretraining.

The CLI package is the only place that knows the whole config; everything below it takes explicit
arguments.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from byol import __version__
from byol.augment import TwoViewAugment, ViewSpec, paper_views
from byol.config import PretrainConfig, build_config, merge, parse_duration, to_dict, validate_pretrain
from byol.data import DATASET_STATS, ImageSet, channel_stats, load_images
from byol.engine import LoopOptions, Trainer, resolve_device
from byol.errors import ByolError, ConfigError, DataError
from byol.eval import extract_features, knn_eval
from byol.methods import BYOL
from byol.models import build_backbone
from byol.optim import build_optimizer
from byol.schedules import scaled_lr

#: Presets ship inside the package (``byol/configs``); the repository's ``configs/`` is a symlink to it.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def find_preset(name_or_path: str) -> Path:
    """A config path, or the name of a preset in ``configs/`` (``fashion-mnist`` -> configs/fashion-mnist.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / name_or_path, CONFIG_DIR / f"{name_or_path}.yaml"):
        if cand.is_file():
            return cand
    presets = sorted(f.stem for f in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
    raise ConfigError(f"config {name_or_path!r} not found (a YAML file, or a preset: {', '.join(presets)})")


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def normalization(cfg_mean, cfg_std, source: str, images: ImageSet) -> tuple[list[float], list[float]]:
    if cfg_mean is not None and cfg_std is not None:
        return list(cfg_mean), list(cfg_std)
    key = source.lower().replace("_", "-")
    key = {"fmnist": "fashion-mnist"}.get(key, key)
    if key in DATASET_STATS and len(DATASET_STATS[key][0]) == images.num_channels:
        mean, std = DATASET_STATS[key]
        return list(mean), list(std)
    mean, std = channel_stats(images.images)
    return list(mean), list(std)


def view_specs(views_cfg) -> tuple[ViewSpec, ViewSpec]:
    t1, t2 = paper_views()
    d1 = merge(merge(t1.to_dict(), views_cfg.both), views_cfg.view1)
    d2 = merge(merge(t2.to_dict(), views_cfg.both), views_cfg.view2)
    return ViewSpec.from_dict(d1), ViewSpec.from_dict(d2)


def build_encoder(model_cfg, in_channels: int) -> torch.nn.Module:
    return build_backbone(
        model_cfg.backbone,
        width=model_cfg.width,
        small_stem=model_cfg.small_stem,
        in_channels=in_channels,
        **model_cfg.options,
    )


def build_method(cfg: PretrainConfig, in_channels: int) -> BYOL:
    if cfg.method.name != "byol":
        raise ConfigError(f"method {cfg.method.name!r} is not available yet (available: byol)")
    backbone = build_encoder(cfg.model, in_channels)
    target = build_encoder(cfg.model, in_channels) if cfg.method.target_init == "random" else None
    return BYOL(
        backbone,
        proj_hidden=cfg.model.proj_hidden,
        proj_dim=cfg.model.proj_dim,
        pred_hidden=cfg.model.pred_hidden,
        tau_base=cfg.method.tau_base,
        target_init=cfg.method.target_init,
        use_predictor=cfg.method.use_predictor,
        target_backbone=target,
    )


@dataclass
class KnnMonitor:
    """Online kNN accuracy of the encoder: a labeled train subset as bank, eval images as queries."""

    bank: torch.Tensor
    bank_labels: torch.Tensor
    queries: torch.Tensor
    query_labels: torch.Tensor
    size: int
    mean: list[float]
    std: list[float]
    k: int
    device: torch.device

    def __call__(self, encoder: torch.nn.Module) -> dict[str, float]:
        kw = dict(size=self.size, mean=self.mean, std=self.std, device=self.device)
        fb = extract_features(encoder, self.bank, **kw)
        fq = extract_features(encoder, self.queries, **kw)
        res = knn_eval(fb, self.bank_labels, fq, self.query_labels, k=(self.k,))
        return {"knn_top1": float(next(iter(res.values())))}


def make_knn_monitor(cfg: PretrainConfig, train: ImageSet, size: int, mean, std, device) -> KnnMonitor | None:
    d = cfg.data
    if d.knn_bank <= 0 or train.labels is None or not cfg.train.knn_every:
        return None
    g = torch.Generator().manual_seed(cfg.train.seed + 12345)
    eval_set: ImageSet | None = None
    if d.eval_split:
        try:
            eval_set = load_images(d.source, d.eval_split, image_size=d.image_size, data_dir=d.data_dir,
                                   cache_dir=d.cache_dir, download=d.download, progress=False)
        except DataError:
            eval_set = None
    perm = torch.randperm(len(train), generator=g)
    if eval_set is None or eval_set.labels is None:
        # hold out queries from train (monitor only: the pretraining itself never sees labels)
        nq = min(d.knn_queries, len(train) // 5)
        q_idx, b_idx = perm[:nq], perm[nq : nq + d.knn_bank]
        queries, q_labels = train.images[q_idx.sort().values], train.labels[q_idx.sort().values]
    else:
        qperm = torch.randperm(len(eval_set), generator=g)[: d.knn_queries].sort().values
        queries, q_labels = eval_set.images[qperm], eval_set.labels[qperm]
        b_idx = perm[: d.knn_bank]
    b_idx = b_idx.sort().values
    return KnnMonitor(torch.as_tensor(train.images[b_idx]), train.labels[b_idx], torch.as_tensor(queries), q_labels,
                      size, mean, std, cfg.train.knn_k, device)


def env_info(device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
    except Exception:
        commit = ""
    return {
        "byol": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "git_commit": commit,
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def load_run_config(run_dir: Path) -> PretrainConfig:
    f = run_dir / "config.yaml"
    if not f.is_file():
        raise ByolError(f"{run_dir} is not a run directory (no config.yaml); start a run with `byol pretrain`")
    return build_config(PretrainConfig, files=[f])


def run_pretrain(cfg: PretrainConfig, run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Build everything from ``cfg`` and train; returns the engine's summary (+ what was built)."""
    validate_pretrain(cfg)
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    d = cfg.data
    train = load_images(d.source, d.split, image_size=d.image_size, data_dir=d.data_dir, cache_dir=d.cache_dir,
                        download=d.download, progress=cfg.train.progress)
    if d.limit is not None and d.limit < len(train):
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.train.seed + 777))[: d.limit]
        train = train.subset(keep.sort().values)
    if len(train) < cfg.optim.batch_size:
        raise DataError(f"{d.source}: {len(train)} images, fewer than one batch ({cfg.optim.batch_size}): lower optim.batch_size")
    mean, std = normalization(d.mean, d.std, d.source, train)
    size = d.view_size or train.image_size
    spec1, spec2 = view_specs(cfg.views)
    augment = TwoViewAugment(spec1, spec2, size, mean, std)
    method = build_method(cfg, train.num_channels).to(device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        # Only the forward (online + target on both views, and the loss) is compiled, as an instance
        # attribute: the state_dict keeps its keys, so checkpoints, resume and export are unchanged.
        # Off by default: on the CPU demo preset it ran slower than eager after a 76 s compile
        # (benchmarks/RESULTS.md section 7); it needs a C++ compiler on CPU.
        if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
            raise ConfigError("train.compile on CPU needs a C++ compiler (c++, g++ or clang++) on PATH: install one "
                              "(e.g. apt-get install g++) or leave train.compile off")
        method.forward = torch.compile(method.forward)
    peak_lr = scaled_lr(cfg.optim.base_lr, cfg.optim.batch_size)
    opt = build_optimizer(cfg.optim.name, method.trainable_modules(), lr=peak_lr,
                          weight_decay=cfg.optim.weight_decay, momentum=cfg.optim.momentum, eta=cfg.optim.eta)
    monitor = make_knn_monitor(cfg, train, size, mean, std, device)
    images = train.images
    if device.type != "cpu" and images.numel() < 2 * 1024**3:
        images = torch.as_tensor(images).to(device)  # small data sets live on the accelerator
    resolved = to_dict(cfg)
    resolved["data"]["mean"], resolved["data"]["std"], resolved["data"]["view_size"] = mean, std, size
    options = LoopOptions(
        epochs=cfg.train.epochs, peak_lr=peak_lr, warmup_epochs=cfg.optim.warmup_epochs,
        accum_steps=cfg.optim.accum_steps, budget_seconds=parse_duration(cfg.train.budget), amp=cfg.train.amp,
        channels_last=cfg.train.channels_last, log_every=cfg.train.log_every, ckpt_every=cfg.train.ckpt_every,
        ckpt_seconds=cfg.train.ckpt_minutes * 60, eval_every_epochs=cfg.train.knn_every if monitor else 0.0,
        seed=cfg.train.seed, progress=cfg.train.progress, budget_pace_window=cfg.train.budget_pace_window,
    )
    trainer = Trainer(method, opt, augment, images, batch_size=cfg.optim.batch_size, device=device, options=options,
                      run_dir=run_dir, evaluate=monitor,
                      checkpoint_extra={"config": resolved, "in_channels": train.num_channels, "classes": train.classes})
    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise ByolError(f"nothing to resume: {last} does not exist")
        trainer.load(torch.load(last, map_location=device, weights_only=False))
    else:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (run_dir / "env.json").write_text(json.dumps({**env_info(device), "views": augment.backend(device)}, indent=2))
        if train.skipped:
            (run_dir / "skipped_files.txt").write_text("\n".join(train.skipped) + "\n")
    summary = trainer.fit()
    summary.update(method=method, train=train, mean=mean, std=std, size=size, device=device, run_dir=run_dir)
    (run_dir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k in (
        "steps", "total_steps", "epochs", "seconds", "stop_reason", "precision", "history")}, indent=2))
    return summary


def load_encoder(path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The online encoder of a run directory or checkpoint file, with the run's resolved config."""
    path = Path(path)
    ckpt_path = path / "checkpoints" / "last.pt" if path.is_dir() else path
    if not ckpt_path.is_file():
        raise ByolError(f"no checkpoint at {ckpt_path}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = build_config(PretrainConfig, extra=ckpt["config"])
    enc = build_encoder(cfg.model, ckpt["in_channels"])
    state = {k[len("encoder."):]: v for k, v in ckpt["method"].items() if k.startswith("encoder.")}
    enc.load_state_dict(state, strict=True)
    return enc.to(device), ckpt["config"]

"""byol side by side with its peers (lightly, kornia, byol-pytorch, torchvision), in one run.

Runs in the separate environment made by ``benchmarks/setup_peers.sh`` (the peers are never dependencies
of byol):

    bash benchmarks/setup_peers.sh
    nice -n 19 .venv-peers/bin/python benchmarks/peers.py            # full run: ~10-15 min on a quiet 2-core machine
    nice -n 19 .venv-peers/bin/python benchmarks/peers.py --quick    # smoke test, < 3 min (numbers not comparable)

Sections (each contender runs in its own subprocess, so peak memory is per configuration; the contenders of a
section are alternated in rotating order, repetition by repetition, and medians are reported):

  (a) model step: one optimizer step on pre-made views (the same tensors for everyone): byol's BYOL method vs
      a BYOL assembled from lightly's blocks vs byol-pytorch's ``BYOL`` class. Same backbone (byol's, built
      once per process from the same config), same heads, batch, optimizer (the setting's, built by
      ``byol.optim.optimizers.build_optimizer``), fp32, channels_last. Two settings: ResNet-18 (CIFAR stem, 32 px,
      heads 4096->256, batch 256, LARS) and the CPU demo preset (convnet with its widths, heads 1024->128,
      28 px, 1 channel, batch 128, SGD). FLOPs per pair by torch.utils.flop_counter (forward + backward),
      MFU against an fp32 matmul peak measured in the same run.
  (b) the paper's two views (T, T') per sample, 32 px RGB, batch 256: byol's batched TwoViewAugment vs
      torchvision.transforms.v2 per sample vs lightly's BYOLTransform per sample (PIL) vs kornia batched.
  (c) end to end on CIFAR-10 from the JPEG image folder: byol's pipeline (decode once into the uint8 cache,
      then the engine's Trainer: gather + batched views + step) vs lightly's standard pipeline
      (LightlyDataset + BYOLTransform + torch DataLoader with 2 workers + a lightly-blocks BYOL step), on the
      CPU preset model made RGB (the preset's convnet, heads 1024->128, 32 px, batch 128, SGD, the preset's
      views: crop scale 0.2-1, otherwise the paper's).
  (d) peak memory of every configuration: its process's peak RSS (ru_maxrss) and, sampled every 0.5 s, the
      PSS summed over the process and its DataLoader workers.

Allocator: byol's contenders run with its CLI's default (freed memory kept in the process, byol/runtime.py),
the peers with glibc's defaults as they ship; the step section adds ``lightly+keepmem``, lightly's step given
byol's setting, so that the table shows how much of a gap is the allocator and how much the code.

Other processes on the machine distort CPU timings badly (2 torch threads on 2 cores lose far more than half
their speed when a third process takes a core), so every measurement also records how many cores other
processes used meanwhile ("other load"), and a contaminated one is repeated (--max-other-load, --retries).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.zip"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # byol.data.DATASET_STATS["cifar10"], used by every contender
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CL = torch.channels_last
#: wall-clock seconds that repeated (contaminated) measurements may still take in this run (set by main)
RETRY_BUDGET_S = 0.0


# =============================================================================================== helpers
def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=CL)


def matmul_peak(n: int = 2048, reps: int = 15, max_other: float = float("inf"), retries: int = 0,
                dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """``n x n`` matmul GFLOP/s (fp32 unless ``dtype``): median (used for MFU) and best of ``reps`` timed
    repeats, and the CPU other processes used meanwhile (cores); repeated up to ``retries`` times while that
    exceeds ``max_other``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best: dict[str, float] = {}
    for _ in range(retries + 1):
        rates = []
        busy0, own0, t0 = machine_busy_s(), time.process_time(), time.perf_counter()
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
        busy1, own1, wall = machine_busy_s(), time.process_time(), time.perf_counter() - t0
        other = max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall) if busy0 is not None and busy1 is not None else 0.0
        r = {"median": statistics.median(rates), "best": max(rates), "other_load_cores": round(other, 2)}
        if not best or other < best["other_load_cores"]:
            best = r
        if other <= max_other:
            break
        wait_for_quiet(max_other, 30.0)
    return best


def _pss_bytes(pid: int) -> int | None:
    """Proportional set size of a process (shared pages split among their users), from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class MemorySampler(threading.Thread):
    """Samples the memory of this process plus all its descendants every ``interval`` seconds.

    Sums PSS (so pages that forked DataLoader workers share with their parent count once), or RSS where
    smaps_rollup is unavailable. Needs psutil to find the children; without it, nothing is sampled.

    It runs only in the end-to-end workers (the others have no child processes, so their ``ru_maxrss`` is
    the whole story), and samples only while ``active`` is set (during a measurement): reading
    smaps_rollup walks the page tables (47 ms for a 4 GB process, measured 2026-12-01), so three idle
    ResNet-18 contenders sampling twice a second took about 0.28 cores from the one being timed.
    """

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self.kind = "PSS"
        self._halt = threading.Event()
        self.active = threading.Event()
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:
            self._proc = None

    def sample(self) -> None:
        if self._proc is None:
            return
        total = 0
        try:
            procs = [self._proc] + self._proc.children(recursive=True)
        except Exception:
            return
        for p in procs:
            v = _pss_bytes(p.pid)
            if v is None:
                self.kind = "RSS"
                try:
                    v = p.memory_info().rss
                except Exception:
                    v = 0
            total += v
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            if self.active.is_set():
                self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.sample()


_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (all cores, incl. steal), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _CLK


def wait_for_quiet(max_other: float, timeout: float, window: float = 1.0) -> tuple[float, float]:
    """Wait (up to ``timeout`` s) until the machine is busy by at most ``max_other`` cores over ``window`` s.

    Called from the parent while every contender is idle, so all the load seen is other processes'.
    Returns (seconds waited, last load seen).
    """
    t0 = time.perf_counter()
    load = float("nan")
    while True:
        b0 = machine_busy_s()
        time.sleep(window)
        b1 = machine_busy_s()
        if b0 is None or b1 is None:
            return time.perf_counter() - t0, load
        load = (b1 - b0) / window
        if load <= max_other or time.perf_counter() - t0 >= timeout:
            return time.perf_counter() - t0, load


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# =========================================================================== (a) model-step contenders
def step_config(setting: str, batch: int):
    """(config, channels, size) of a model-step setting; built exactly as throughput.py / the CLI do."""
    from byol.config import find_preset
    from byol.train.config import build_config

    if setting == "resnet18-cifar":
        cfg = build_config(extra={
            "model": {"backbone": "resnet18", "small_stem": True, "proj_hidden": 4096, "proj_dim": 256, "pred_hidden": 4096},
            "method": {"target_init": "copy"}, "optim": {"batch_size": batch}})
        return cfg, 3, 32
    if setting in ("demo", "cpu-rgb32"):
        cfg = build_config(files=[find_preset("fashion-mnist")], extra={"optim": {"batch_size": batch}})
        return (cfg, 1, 28) if setting == "demo" else (cfg, 3, 32)
    raise ValueError(setting)


def make_optimizer(cfg, modules):
    from byol.optim.optimizers import build_optimizer
    from byol.optim.schedules import scaled_lr

    o = cfg.optim
    return build_optimizer(o.name, modules, lr=scaled_lr(o.base_lr, o.batch_size), weight_decay=o.weight_decay,
                           momentum=o.momentum, eta=o.eta)


def fixed_views(cfg, ch: int, size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same two view tensors in every process: byol's views of seeded random uint8 images."""
    from byol.augment import TwoViewAugment
    from byol.augment import view_specs

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, ch, size, size), dtype=torch.uint8, generator=g)
    v1, v2 = TwoViewAugment(*view_specs(cfg.views.view1, cfg.views.view2, cfg.views.both), size, [0.5] * ch, [0.25] * ch)(x, g)
    return _cl(v1), _cl(v2)


class ByolModel:
    """byol's BYOL method, built as the CLI builds it (byol.methods.build_method)."""

    name = "byol"

    def __init__(self, cfg, ch: int, amp: str = "off") -> None:
        from byol.methods import build_method
        from byol.models.factory import backbone_factory
        from byol.runtime.device import autocast_for

        self.method = build_method(cfg.method, backbone_factory(cfg.model, ch)).to(memory_format=CL)
        self.method.train()
        self.opt = make_optimizer(cfg, self.method.trainable_modules())
        self.autocast, _ = autocast_for(torch.device("cpu"), amp)  # what the engine does with train.amp

    def loss(self, v1, v2):
        with self.autocast:
            return self.method(v1, v2)["loss"]

    def step(self, v1, v2, k: int, total: int) -> None:
        loss = self.loss(v1, v2)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.method.after_step(k, total)


class LightlyModel:
    """A BYOL assembled from lightly's blocks the way lightly's examples and benchmarks do it."""

    name = "lightly"

    def __init__(self, cfg, ch: int) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from torch import nn

        from byol.models.factory import build_encoder

        m = cfg.model
        backbone = build_encoder(m, ch)
        net = nn.Module()
        net.backbone = backbone
        net.projection_head = BYOLProjectionHead(backbone.feature_dim, cfg.method.proj_hidden, cfg.method.proj_dim)
        net.prediction_head = BYOLPredictionHead(cfg.method.proj_dim, cfg.method.pred_hidden, cfg.method.proj_dim)
        net.backbone_momentum = copy.deepcopy(net.backbone)
        net.projection_head_momentum = copy.deepcopy(net.projection_head)
        deactivate_requires_grad(net.backbone_momentum)
        deactivate_requires_grad(net.projection_head_momentum)
        self.net = net.to(memory_format=CL)
        self.net.train()
        self.criterion = NegativeCosineSimilarity()
        self.tau_base = cfg.method.tau_base
        self.opt = make_optimizer(cfg, [net.backbone, net.projection_head, net.prediction_head])

    def _online(self, x):
        n = self.net
        return n.prediction_head(n.projection_head(n.backbone(x)))

    def _momentum(self, x):
        n = self.net
        return n.projection_head_momentum(n.backbone_momentum(x)).detach()

    def loss(self, x0, x1):
        p0, z0 = self._online(x0), self._momentum(x0)
        p1, z1 = self._online(x1), self._momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def step(self, x0, x1, k: int, total: int) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        n = self.net
        m = cosine_schedule(k, total, self.tau_base, 1.0)
        update_momentum(n.backbone, n.backbone_momentum, m=m)
        update_momentum(n.projection_head, n.projection_head_momentum, m=m)
        loss = self.loss(x0, x1)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class _Feed:
    """byol-pytorch's ``augment_fn``: hands the learner a pre-made view instead of augmenting.

    ``BYOL.forward(x)`` in byol-pytorch 0.9.1 takes one image batch and calls ``augment_fn(x)`` and
    ``augment_fn2(x)`` itself (it has no argument for explicit views), so the views are fed through these.
    Before a view is set (the constructor's 3-channel mock forward) it passes ``x`` through, cut to ``ch``
    channels for a grayscale backbone.
    """

    def __init__(self, ch: int) -> None:
        self.ch = ch
        self.view: torch.Tensor | None = None

    def __call__(self, x):
        return self.view if self.view is not None else x[:, : self.ch]


class LucidrainsModel:
    """byol-pytorch's ``BYOL`` class around the same backbone.

    Turned off / changed from its constructor defaults:
    - ``use_simplicial_embeddings=False`` (default True in 0.9.1: an extra Linear+BN+softmax SEM block
      before the projector, not in the paper);
    - ``augment_fn``/``augment_fn2``: its default augmentation (SimCLR-like, one random draw per batch, jitter
      p=0.3, no solarize) is replaced by the pre-made views;
    - ``hidden_layer=-1``: the backbone already returns pooled features (default -2 hooks the penultimate child);
    - ``moving_average_decay=tau_base`` (default 0.99; it stays constant, byol-pytorch has no tau schedule).
    Kept: both views go through the encoders as one concatenated batch (BN statistics over both views, where
    the paper and byol normalise per view), and the projector's last Linear has a bias.
    """

    name = "byol-pytorch"

    def __init__(self, cfg, ch: int, size: int) -> None:
        from byol_pytorch import BYOL

        from byol.models.factory import build_encoder

        m = cfg.model
        if cfg.method.pred_hidden != cfg.method.proj_hidden:
            raise ValueError("byol-pytorch uses one hidden size for projector and predictor")
        self.f1, self.f2 = _Feed(ch), _Feed(ch)
        self.learner = BYOL(
            build_encoder(m, ch), image_size=size, hidden_layer=-1, projection_size=cfg.method.proj_dim,
            projection_hidden_size=cfg.method.proj_hidden, augment_fn=self.f1, augment_fn2=self.f2,
            moving_average_decay=cfg.method.tau_base, use_momentum=True, use_simplicial_embeddings=False,
        )  # fmt: skip
        self.learner = self.learner.to(memory_format=CL)
        self.learner.train()
        self.opt = make_optimizer(cfg, [self.learner.online_encoder, self.learner.online_predictor])

    def loss(self, v1, v2):
        self.f1.view, self.f2.view = v1, v2
        return self.learner(v1)

    def step(self, v1, v2, k: int, total: int) -> None:
        loss = self.loss(v1, v2)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.learner.update_moving_average()


def count_flops_per_pair(model, v1, v2, batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model.loss(v1[:batch], v2[:batch]).backward()
    model.opt.zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


class _TimedUnits:
    """``run(n)`` times ``n`` calls of ``_unit()``, each making ``batch`` pairs."""

    batch: int

    def _unit(self) -> None:
        raise NotImplementedError

    def run(self, n: int) -> dict[str, float]:
        t = time.perf_counter()
        for _ in range(n):
            self._unit()
        return {"seconds": time.perf_counter() - t, "pairs": n * self.batch}


class StepBench(_TimedUnits):
    """One optimizer step of one implementation on fixed views; ``run(n)`` times ``n`` steps."""

    def __init__(self, impl: str, setting: str, batch: int, flop_batch: int = 16, total_steps: int = 1000) -> None:
        torch.manual_seed(0)
        cfg, ch, size = step_config(setting, batch)
        self.v1, self.v2 = fixed_views(cfg, ch, size, batch)
        torch.manual_seed(0)
        self.model = {"byol": lambda: ByolModel(cfg, ch), "byol-bf16": lambda: ByolModel(cfg, ch, "bf16"),
                      "lightly": lambda: LightlyModel(cfg, ch),
                      "byol-pytorch": lambda: LucidrainsModel(cfg, ch, size)}[impl]()
        self.batch, self.total, self.k = batch, total_steps, 0
        fb = min(flop_batch, batch)
        self.info: dict[str, Any] = {"flops_per_pair": count_flops_per_pair(self.model, self.v1, self.v2, fb),
                                     "flop_count_batch": fb, "optimizer": cfg.optim.name,
                                     "precision": "bf16" if impl.endswith("bf16") else "fp32"}
        t = time.perf_counter()
        self._unit()  # warm-up (oneDNN primitives, optimizer state)
        self.info["warmup_s"] = time.perf_counter() - t
        self.info["unit_s"] = self.info["warmup_s"]

    def _unit(self) -> None:
        self.model.step(self.v1, self.v2, self.k, self.total)
        self.k += 1



# ==================================================================================== (b) view contenders
class ViewsBench(_TimedUnits):
    """The paper's two views (T, T') of a uint8 batch: ``run(n)`` makes ``n`` batches of view pairs."""

    def __init__(self, impl: str, batch: int = 256, size: int = 32) -> None:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
        self.batch, self.size = batch, size
        self.info: dict[str, Any] = {}
        self.fn = getattr(self, f"_setup_{impl.replace('-', '_')}")()
        t = time.perf_counter()
        self.fn()  # warm-up
        self.info["unit_s"] = time.perf_counter() - t

    def _setup_byol(self):
        from byol.augment import TwoViewAugment, paper_views

        aug = TwoViewAugment(*paper_views(), self.size, CIFAR_MEAN, CIFAR_STD)
        g = torch.Generator().manual_seed(1)
        self.info["per_sample_params"] = "yes"
        return lambda: aug(self.x, g)

    def _setup_byol_eager(self):
        """byol without its fused CPU kernel: the batched eager torch ops (GPUs and machines with no compiler)."""
        os.environ["BYOL_FUSED_VIEWS"] = "0"  # this contender has its own process
        return self._setup_byol()

    def _setup_torchvision(self):
        from torchvision.transforms import v2

        def view(blur_p: float, solarize_p: float):
            ops = [
                v2.RandomResizedCrop(self.size, scale=(0.08, 1.0), antialias=True),
                v2.RandomHorizontalFlip(0.5),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                v2.RandomGrayscale(0.2),
                v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 2.0))], p=blur_p),
            ]
            if solarize_p > 0:
                ops.append(v2.RandomSolarize(128, p=solarize_p))
            ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR_MEAN, CIFAR_STD)]
            return v2.Compose(ops)

        t1, t2 = view(1.0, 0.0), view(0.1, 0.2)
        imgs = list(self.x.unbind(0))
        self.info["per_sample_params"] = "yes (one Compose call per image)"
        return lambda: (torch.stack([t1(i) for i in imgs]), torch.stack([t2(i) for i in imgs]))

    def _setup_lightly(self):
        from PIL import Image
        from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform

        norm = {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}
        tf = BYOLTransform(BYOLView1Transform(input_size=self.size, normalize=norm),
                           BYOLView2Transform(input_size=self.size, normalize=norm))
        # PIL images made once, outside the timing: a dataset decodes straight to PIL.
        pil = [Image.fromarray(a) for a in self.x.permute(0, 2, 3, 1).numpy()]
        self.info["per_sample_params"] = "yes (PIL, one call per image)"

        def run():
            pairs = [tf(im) for im in pil]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

        return run

    def _setup_kornia(self):
        import kornia.augmentation as K
        from torch import nn

        mean, std = torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD)

        def view(blur_p: float, solarize_p: float):
            ops = [
                K.RandomResizedCrop((self.size, self.size), scale=(0.08, 1.0)),
                K.RandomHorizontalFlip(p=0.5),
                K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8),
                K.RandomGrayscale(p=0.2),
                K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=blur_p),
            ]
            if solarize_p > 0:
                ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p))
            ops.append(K.Normalize(mean, std))
            return nn.Sequential(*ops)

        t1, t2 = view(1.0, 0.0), view(0.1, 0.2)
        self.info["per_sample_params"] = "yes, except ColorJitter's op order (one per batch)"

        def run():
            xf = self.x.float().div_(255.0)
            return t1(xf), t2(xf)

        return run

    def _unit(self) -> None:
        self.fn()


# ================================================================================ (c) end-to-end contenders
class ByolE2E:
    """byol's own pipeline: ``load_images`` (decode once into the uint8 cache) + the engine's ``Trainer``."""

    def __init__(self, folder: str, batch: int, cache_dir: str, warmup_steps: int = 2, amp: str = "off") -> None:
        from byol.augment import TwoViewAugment
        from byol.augment import view_specs
        from byol.methods import build_method
        from byol.models.factory import backbone_factory
        from byol.data import load_images
        from byol.data.batches import CachedImages
        from byol.train.loop import LoopOptions, Trainer
        from dataclasses import replace

        torch.manual_seed(0)
        t = time.perf_counter()
        train = load_images(folder, "train", cache_dir=cache_dir, progress=False)
        decode_s = time.perf_counter() - t
        t = time.perf_counter()
        train = load_images(folder, "train", cache_dir=cache_dir, progress=False)  # what every later run pays
        cached_s = time.perf_counter() - t
        cfg, ch, size = step_config("cpu-rgb32", batch)
        assert train.num_channels == ch and train.image_size == size, (train.images.shape, ch, size)
        method = build_method(cfg.method, backbone_factory(cfg.model, ch)).to(memory_format=CL)
        opt = make_optimizer(cfg, method.trainable_modules())
        aug = TwoViewAugment(*view_specs(cfg.views.view1, cfg.views.view2, cfg.views.both), size, CIFAR_MEAN, CIFAR_STD)
        # the preset's run, without its budget, warmup and periodic kNN: a fixed number of steps per call
        train_cfg = replace(cfg.train, epochs=1000.0, budget=None, amp=amp, channels_last=True, progress=False)
        opts = LoopOptions.from_config(train_cfg, replace(cfg.optim, warmup_epochs=0.0), evaluate_every=0.0)
        self.trainer = Trainer(method, opt, aug, CachedImages(train.images), batch_size=batch, device=torch.device("cpu"),
                               options=opts, run_dir=None)
        # The engine has no per-phase timing: wrap its (private) _views, which gathers the uint8 batch from
        # the cache and makes both views, to split data + views from the step.
        self.views_s = 0.0
        inner = self.trainer._views

        def timed_views(idx):
            t0 = time.perf_counter()
            out = inner(idx)
            self.views_s += time.perf_counter() - t0
            return out

        self.trainer._views = timed_views
        self.batch = batch
        self.info = {"images": len(train), "decode_s": decode_s, "cached_load_s": cached_s,
                     "model": f"convnet {list(step_config('demo', batch)[0].model.options['widths'])} RGB, heads 1024->128, "
                              "SGD (fashion-mnist preset, 3 channels)"}
        t = time.perf_counter()
        self._fit(warmup_steps)
        self.info["unit_s"] = (time.perf_counter() - t) / warmup_steps

    def _fit(self, n: int) -> None:
        st = self.trainer.state
        st.total_steps = st.step + n  # the Trainer runs until total_steps: one call = n more steps
        self.trainer.fit()

    def run(self, n: int) -> dict[str, float]:
        self.views_s = 0.0
        t = time.perf_counter()
        self._fit(n)
        sec = time.perf_counter() - t
        return {"seconds": sec, "pairs": n * self.batch, "data_views_s": self.views_s}


class LightlyE2E:
    """lightly's standard pipeline: LightlyDataset(folder) + BYOLTransform + DataLoader(2 workers) + step."""

    def __init__(self, folder: str, batch: int, workers: int = 2) -> None:
        from lightly.data import LightlyDataset
        from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
        from torch.utils.data import DataLoader

        torch.manual_seed(0)
        cfg, ch, size = step_config("cpu-rgb32", batch)
        scale = float(cfg.views.both.get("crop_scale", [0.08])[0])
        norm = {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}
        tf = BYOLTransform(BYOLView1Transform(input_size=size, min_scale=scale, normalize=norm),
                           BYOLView2Transform(input_size=size, min_scale=scale, normalize=norm))
        t = time.perf_counter()
        ds = LightlyDataset(input_dir=str(Path(folder) / "cifar10" / "train"), transform=tf)
        self.info: dict[str, Any] = {"images": len(ds), "index_s": time.perf_counter() - t, "workers": workers,
                                     "model": "same convnet, lightly blocks (BYOLProjection/PredictionHead), SGD"}
        self.loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
        self.model = LightlyModel(cfg, ch)
        self.batch, self.k = batch, 0
        t = time.perf_counter()
        self.run(1)
        self.info["unit_s"] = time.perf_counter() - t

    def _step(self, views) -> None:
        x0, x1 = views
        self.model.step(_cl(x0), _cl(x1), self.k, 1000)
        self.k += 1

    def run(self, n: int) -> dict[str, float]:
        # A fresh iterator per measurement (its workers start, prefetch, and end with it), so that no worker
        # keeps running while another contender is being timed. The first batch (worker start-up) is untimed.
        it = iter(self.loader)
        views, _, _ = next(it)
        self._step(views)
        wait = 0.0
        t = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            views, _, _ = next(it)
            wait += time.perf_counter() - t0
            self._step(views)
        sec = time.perf_counter() - t
        del it
        return {"seconds": sec, "pairs": n * self.batch, "data_views_s": wait}


BENCHES = {"step": StepBench, "views": ViewsBench, "e2e-byol": ByolE2E, "e2e-lightly": LightlyE2E}


# ================================================================================ worker processes (d)
def _worker(conn, kind: str, params: dict, threads: int) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    params = dict(params)
    kept = False
    if params.pop("malloc", "glibc") == "keep":  # before the first large allocation
        from byol.runtime import tune_malloc

        kept = tune_malloc()
    sampler = MemorySampler()
    if kind.startswith("e2e"):  # only those start DataLoader workers; elsewhere ru_maxrss is the whole story
        sampler.start()
    try:
        rss0 = _maxrss_mb()
        bench = BENCHES[kind](**params)
        conn.send(("ready", {**bench.info, "rss_start_mb": rss0, "rss_after_setup_mb": _maxrss_mb(),
                             "malloc": "keep" if kept else "glibc"}))
        while True:
            msg = conn.recv()
            if msg[0] == "run":
                sampler.active.set()
                try:
                    r = bench.run(msg[1])
                finally:
                    sampler.active.clear()
                sampler.sample()
                conn.send(("ok", r))
            else:
                break
        sampler.stop()
        conn.send(("ok", {"rss_peak_mb": _maxrss_mb(), "tree_peak_kind": sampler.kind,
                          "tree_peak_mb": sampler.peak / 2**20 if sampler.peak else None}))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def malloc_for(label: str) -> str:
    """The allocator setting a contender runs with: byol's rows as its CLI runs them (freed memory kept in the
    process, byol/runtime.py, unless BYOL_MALLOC=glibc), the peers as they ship (glibc's defaults), and rows
    labelled ``...+keepmem`` (a peer given byol's setting, to show how much of a difference is the allocator)."""
    if label.startswith("byol") and label != "byol-pytorch" or label.endswith("+keepmem"):
        return "keep"
    return "glibc"


class Contender:
    """A benchmark configuration living in its own (spawned) process, driven over a pipe."""

    def __init__(self, label: str, kind: str, params: dict, threads: int) -> None:
        self.label = label
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # not a daemon: lightly's DataLoader starts worker processes of its own
        params = {"malloc": malloc_for(label), **params}
        self.proc = ctx.Process(target=_worker, args=(child, kind, params, threads), daemon=False)
        self.proc.start()
        child.close()
        self.info = self._recv()
        self.runs: list[dict] = []
        self.memory: dict = {}

    def _recv(self) -> dict:
        status, payload = self.conn.recv()
        if status == "error":
            self.proc.join(timeout=10)
            raise RuntimeError(f"{self.label}: worker failed:\n{payload}")
        return payload

    def _tree_cpu_s(self) -> float | None:
        """CPU seconds used so far by this contender's process and its children (reaped ones included)."""
        try:
            import psutil

            p = psutil.Process(self.proc.pid)
            t = p.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for c in p.children(recursive=True):
                try:
                    ct = c.cpu_times()
                    total += ct.user + ct.system
                except psutil.Error:
                    pass
            return total
        except Exception:
            return None

    def measure(self, n: int) -> dict:
        """One measurement of ``n`` units, with the CPU that *other* processes used meanwhile (in cores)."""
        busy0, tree0, t0 = machine_busy_s(), self._tree_cpu_s(), time.perf_counter()
        self.conn.send(("run", n))
        r = self._recv()
        wall = time.perf_counter() - t0
        busy1, tree1 = machine_busy_s(), self._tree_cpu_s()
        if None not in (busy0, busy1, tree0, tree1) and wall > 0:
            r["other_load_cores"] = max(0.0, ((busy1 - busy0) - (tree1 - tree0)) / wall)
        return r

    def run(self, n: int, max_other: float = float("inf"), retries: int = 0, log=print) -> dict:
        """``measure(n)``, repeated up to ``retries`` times while other processes used more than ``max_other``
        cores meanwhile; keeps the cleanest measurement."""
        global RETRY_BUDGET_S
        best = self.measure(n)
        for _ in range(retries):
            other = best.get("other_load_cores", 0.0)
            if other <= max_other:
                break
            if RETRY_BUDGET_S <= 0:
                log(f"      {self.label}: other processes used {other:.2f} cores meanwhile (retry budget spent)")
                break
            log(f"      {self.label}: other processes used {other:.2f} cores meanwhile; measuring again")
            t = time.perf_counter()
            waited, now = wait_for_quiet(max_other, min(60.0, RETRY_BUDGET_S))
            if waited > 1:
                log(f"      waited {waited:.0f} s for a quieter machine (other load now {now:.2f} cores)")
            r = self.measure(n)
            RETRY_BUDGET_S -= time.perf_counter() - t
            if r.get("other_load_cores", 0.0) < other:
                best = r
        self.runs.append(best)
        return best

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("stop",))
                self.memory = self._recv()
            except (EOFError, OSError, RuntimeError):
                pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()

    def rates(self) -> list[float]:
        return [r["pairs"] / r["seconds"] for r in self.runs]


def alternate(specs: list[tuple[str, str, dict]], reps: int, target_s: float, threads: int, *,
              fixed_units: int | None = None, max_units: int = 1000, max_other: float = 0.3, retries: int = 2,
              log=print) -> list[Contender]:
    """Start every contender (one at a time), then ``reps`` rounds of one measurement each, in an order that
    rotates by one every round. Each measurement runs ``fixed_units`` steps/batches, or as many as fill about
    ``target_s`` seconds (calibrated by an untimed run after the warm-up). A measurement during which other
    processes used more than ``max_other`` cores is repeated (at most ``retries`` times)."""
    cons: list[Contender] = []
    try:
        for label, kind, params in specs:
            t = time.perf_counter()
            cons.append(Contender(label, kind, params, threads))
            log(f"    started {label} ({time.perf_counter() - t:.1f} s)")
        units: dict[str, int] = {}
        for c in cons:
            if fixed_units:
                units[c.label] = fixed_units
                continue
            n = 1 if c.info["unit_s"] >= target_s else max(1, min(max_units, round(0.3 * target_s / c.info["unit_s"])))
            if c.info["unit_s"] < target_s:  # the warm-up over-estimates: calibrate on a short untimed run
                r = c.measure(n)
                n = max(1, min(max_units, round(target_s * n / r["seconds"])))
            units[c.label] = n
        for rep in range(reps):
            k = rep % len(cons)
            for c in cons[k:] + cons[:k]:
                r = c.run(units[c.label], max_other, retries, log)
                other = r.get("other_load_cores")
                log(f"    rep {rep + 1}/{reps} {c.label:14s} {r['pairs'] / r['seconds']:9.1f} pairs/s "
                    f"({units[c.label]} x, {r['seconds']:.1f} s" + ("" if other is None else f", other load {other:.2f} cores") + ")")
    finally:
        for c in cons:
            c.stop()
    return cons


# ========================================================================================== data set
def prepare_cifar(zip_path: Path, root: Path, per_class: int | None) -> Path:
    """Extract CIFAR-10's train images (all, or the first ``per_class`` of each class) to ``root``/<tag>.

    Returns the folder holding ``cifar10/train/<class>/*.jpg``. Reused when complete.
    """
    tag = "full" if per_class is None else f"sub{per_class}"
    out = root / tag
    done = out / ".complete"
    if done.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("cifar10/train/") and n.lower().endswith(".jpg"))
        if per_class is not None:
            by_class: dict[str, list[str]] = {}
            for n in names:
                by_class.setdefault(n.split("/")[2], []).append(n)
            names = [n for c in sorted(by_class) for n in by_class[c][:per_class]]
        for n in names:
            zf.extract(n, out)
    done.write_text(f"{len(names)} images from {zip_path}\n")
    return out


# ====================================================================================== reporting
def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in ("byol", "torch", "torchvision", "lightly", "kornia", "byol-pytorch", "pillow", "numpy"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "-"
    return out


def cpu_name() -> str:
    from byol.run.files import cpu_model

    return cpu_model()


def git_commit() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return r.stdout.strip() + (" (src/ modified)" if dirty else "")
    except Exception:
        return ""


def _mem(c: Contender) -> tuple[float | None, float | None]:
    return c.memory.get("rss_peak_mb"), c.memory.get("tree_peak_mb")


def summarize(cons: list[Contender], peak: float | None = None, peak_bf16: float | None = None) -> list[dict]:
    """One row per contender; MFU against the fp32 peak, or the bf16 peak for a bf16 contender."""
    base = _median(cons[0].rates())
    rows = []
    for c in cons:
        rates = c.rates()
        med = _median(rates)
        row: dict[str, Any] = {"impl": c.label, "pairs_per_s": round(med, 2),
                               "spread": [round(min(rates), 2), round(max(rates), 2)], "reps": len(rates),
                               "byol_speedup": round(base / med, 3) if med else None}
        fpp = c.info.get("flops_per_pair")
        if fpp:
            row["gflop_per_pair"] = round(fpp / 1e9, 4)
            row["achieved_gflops"] = round(fpp * med / 1e9, 2)
            pk = peak_bf16 if c.info.get("precision") == "bf16" else peak
            if pk:
                row["mfu"] = round(fpp * med / 1e9 / pk, 3)
        if c.runs and "data_views_s" in c.runs[0]:
            row["data_views_share"] = round(_median([r["data_views_s"] / r["seconds"] for r in c.runs]), 3)
        for k in ("per_sample_params", "decode_s", "cached_load_s", "images", "optimizer", "index_s", "flop_count_batch",
                  "malloc"):
            if k in c.info:
                v = c.info[k]
                row[k] = round(v, 2) if isinstance(v, float) else v
        others = [r["other_load_cores"] for r in c.runs if "other_load_cores" in r]
        row["other_load_max"] = round(max(others), 2) if others else None
        rss, rss_all = _mem(c)
        row["peak_rss_mb"] = round(rss) if rss else None
        row["peak_tree_pss_mb"] = round(rss_all) if rss_all else None
        rows.append(row)
    return rows


def fmt_table(rows: list[dict], cols: list[tuple[str, str]]) -> list[str]:
    """Markdown table of ``rows`` with (header, key) columns."""

    def cell(r, k):
        v = r.get(k)
        if v is None:
            return "-"
        if k == "spread":
            return f"{v[0]:g}-{v[1]:g}"
        if k == "byol_speedup":
            return f"{v:.2f}x"
        if k == "data_views_share":
            return f"{100 * v:.1f}%"
        if k == "mfu" or k == "other_load_max":
            return f"{v:.2f}"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, k) for _, k in cols) + " |" for r in rows]
    return lines


STEP_COLS = [("impl", "impl"), ("pairs/s", "pairs_per_s"), ("min-max", "spread"), ("GFLOP/pair", "gflop_per_pair"),
             ("GFLOP/s", "achieved_gflops"), ("MFU", "mfu"), ("byol speed-up", "byol_speedup"),
             ("malloc", "malloc"), ("peak RSS MB", "peak_rss_mb"), ("other load", "other_load_max")]
VIEW_COLS = [("impl", "impl"), ("pairs/s", "pairs_per_s"), ("min-max", "spread"), ("byol speed-up", "byol_speedup"),
             ("per-sample params", "per_sample_params"), ("peak RSS MB", "peak_rss_mb"),
             ("other load", "other_load_max")]
E2E_COLS = [("pipeline", "impl"), ("pairs/s", "pairs_per_s"), ("min-max", "spread"), ("byol speed-up", "byol_speedup"),
            ("data+views share", "data_views_share"), ("peak RSS MB", "peak_rss_mb"),
            ("malloc", "malloc"), ("with workers, PSS MB", "peak_tree_pss_mb"), ("other load", "other_load_max")]


# ============================================================================================ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: small R18 batch, few steps, 1-2 reps (< 3 min)")
    ap.add_argument("--only", action="append", choices=["step-r18", "step-demo", "views", "e2e"],
                    help="run only these sections (repeatable)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every measured process (default 2)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per section (default: 3 for ResNet-18 "
                    "and end to end, 5 otherwise; --quick: 1-2)")
    ap.add_argument("--cifar-zip", type=Path, default=DEFAULT_ZIP)
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/byol-peers-cifar10"),
                    help="where the CIFAR-10 images are extracted and byol's cache is written (outside the repo)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "peers_results.json")
    ap.add_argument("--max-other-load", type=float, default=0.3,
                    help="repeat a measurement during which other processes used more CPU cores than this (default 0.3; "
                    "a quiet machine shows ~0.1 here, kernel threads included)")
    ap.add_argument("--retries", type=int, default=None, help="at most this many repeats (default 2; --quick: 0)")
    ap.add_argument("--retry-budget", type=float, default=240.0,
                    help="seconds that repeated measurements may add to the whole run (default 240)")
    a = ap.parse_args()
    sections = a.only or ["step-r18", "step-demo", "views", "e2e"]
    q = a.quick

    def reps(full: int, quick: int) -> int:
        return a.reps or (quick if q else full)

    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    py = os.path.relpath(sys.executable, Path.cwd()) if sys.executable.startswith(str(REPO)) else sys.executable
    command = " ".join([py, os.path.relpath(__file__, Path.cwd())] + sys.argv[1:])
    niceness = os.nice(0)
    env = {"versions": versions(), "threads": a.threads, "cpu": cpu_name(), "cores": os.cpu_count(),
           "git": git_commit(), "command": command, "nice": niceness, "quick": q,
           "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    retries = a.retries if a.retries is not None else (0 if q else 2)
    guard = {"max_other": a.max_other_load, "retries": retries}
    global RETRY_BUDGET_S
    RETRY_BUDGET_S = a.retry_budget
    v = env["versions"]
    print(f"# {command}  (nice {niceness})")
    print(f"torch {v['torch']}, torchvision {v['torchvision']}, lightly {v['lightly']}, kornia {v['kornia']}, "
          f"byol-pytorch {v['byol-pytorch']}, byol {v['byol']} ({env['git']}); {a.threads} threads; {env['cpu']}")
    _, load0 = wait_for_quiet(a.max_other_load, 0.0)
    if load0 > a.max_other_load:
        print(f"WARNING: other processes are using {load0:.2f} cores; timings with {a.threads} threads on this "
              f"machine suffer far more than proportionally (contaminated measurements are repeated, "
              f"--retry-budget {a.retry_budget:.0f} s)", flush=True)
    env["other_load_at_start"] = round(load0, 2)
    peak0 = matmul_peak(**guard)
    peak = peak0["median"]
    print(f"fp32 2048x2048 matmul: median {peak:.1f} GFLOP/s (best {peak0['best']:.1f}; other processes used "
          f"{peak0['other_load_cores']:.2f} cores meanwhile)", flush=True)
    from byol.runtime.device import cpu_has_fast_bf16

    amx = cpu_has_fast_bf16()  # then byol's default (train.amp=auto) is bf16 autocast: measured as an extra row
    peak_bf16 = matmul_peak(dtype=torch.bfloat16, **guard)["median"] if amx else None
    if amx:
        print(f"this CPU has AMX: bf16 2048x2048 matmul median {peak_bf16:.1f} GFLOP/s; byol's default precision "
              f"here is bf16 autocast, measured as extra 'byol-bf16' rows (MFU against the bf16 peak)", flush=True)
    env["amx_bf16"] = amx
    results: dict[str, Any] = {"env": env, "matmul_peak_gflops": {"start": peak0, "bf16": peak_bf16}, "sections": {}}
    md: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    # ---------------------------------------------------------------------------------------- (a)
    demo_widths = list(step_config("demo", 128)[0].model.options["widths"])  # the preset's, whatever they are now
    for key, setting, batch, title, nrep, target in (
        ("step-r18", "resnet18-cifar", 16 if q else 256, "ResNet-18 (CIFAR stem), 32 px RGB, heads 4096->256, LARS",
         reps(3, 1), 0.0),
        ("step-demo", "demo", 128, f"CPU demo preset: convnet {demo_widths}, 28 px gray, heads 1024->128, SGD",
         reps(5, 2), 1.0 if q else 3.0),
    ):
        if key not in sections:
            continue
        log(f"\n(a) model step: {title}, batch {batch}")
        impls = ("byol", "lightly", "byol-pytorch", "lightly+keepmem") + (("byol-bf16",) if amx else ())
        specs = [(impl, "step", {"impl": impl.removesuffix("+keepmem"), "setting": setting, "batch": batch,
                                 "flop_batch": 8 if q else 16}) for impl in impls]
        cons = alternate(specs, nrep, target, a.threads, fixed_units=1 if target == 0 else None, log=log, **guard)
        rows = summarize(cons, peak, peak_bf16)
        results["sections"][key] = {"title": title, "batch": batch, "rows": rows}
        table = fmt_table(rows, STEP_COLS)
        log("\n".join(table))
        md += [f"**Model step, {title}, batch {batch}** (fp32, channels_last, the same pre-made views; "
               f"FLOPs counted on forward+backward at batch {rows[0].get('flop_count_batch', 16)} per pair"
               + ("; byol-bf16: byol's default on this AMX CPU, bf16 autocast, MFU against the bf16 matmul peak"
                  if amx else "") + ")", ""]
        md += [f"@@step-table:{key}@@", ""]  # written at the end, when MFU's peak is final

    # ---------------------------------------------------------------------------------------- (b)
    if "views" in sections:
        log("\n(b) the paper's two views (T, T'), 32 px RGB, batch 256")
        specs = [(impl, "views", {"impl": impl, "batch": 256, "size": 32})
                 for impl in ("byol", "byol-eager", "torchvision", "lightly", "kornia")]
        cons = alternate(specs, reps(5, 2), 0.6 if q else 2.0, a.threads, log=log, **guard)
        rows = summarize(cons)
        results["sections"]["views"] = {"title": "paper views T/T', 32 px RGB, batch 256", "rows": rows}
        table = fmt_table(rows, VIEW_COLS)
        log("\n".join(table))
        md += ["**The paper's two views (T, T'), 32 px RGB, batch 256** (random-resized crop 0.08-1, flip, "
               "colour jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2, blur 1.0/0.1 (3x3 at 32 px, PIL's own radius "
               "for lightly), solarize 0/0.2, normalize; float32 outputs; per-sample contenders in one process)", ""]
        md += table + [""]

    # ---------------------------------------------------------------------------------------- (c)
    if "e2e" in sections:
        if not a.cifar_zip.is_file():
            log(f"\n(c) end to end: SKIPPED, {a.cifar_zip} not found (pass --cifar-zip)")
            results["sections"]["e2e"] = {"skipped": f"{a.cifar_zip} not found"}
        else:
            per_class = 256 if q else None
            t = time.perf_counter()
            folder = prepare_cifar(a.cifar_zip, a.data_root, per_class)
            log(f"\n(c) end to end on CIFAR-10 JPEG folder {folder} ({time.perf_counter() - t:.1f} s to extract)")
            cache = a.data_root / f"byol-cache-{os.getpid()}"  # fresh: byol's first load really decodes
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(str(cache) + "-bf16", ignore_errors=True)
            batch, steps = 128, 4 if q else 30
            specs = [("byol", "e2e-byol", {"folder": str(folder), "batch": batch, "cache_dir": str(cache)}),
                     ("lightly", "e2e-lightly", {"folder": str(folder), "batch": batch, "workers": 2})]
            if amx:
                specs.append(("byol-bf16", "e2e-byol", {"folder": str(folder), "batch": batch,
                                                         "cache_dir": str(cache) + "-bf16", "amp": "bf16"}))
            try:
                cons = alternate(specs, reps(3, 2), 0.0, a.threads, fixed_units=steps, log=log, **guard)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(str(cache) + "-bf16", ignore_errors=True)
            rows = summarize(cons)
            model = cons[0].info.get("model", "")
            results["sections"]["e2e"] = {"title": "end to end, CIFAR-10 JPEG folder", "batch": batch,
                                          "steps_per_measurement": steps, "model": model, "rows": rows}
            table = fmt_table(rows, E2E_COLS)
            log("\n".join(table))
            b = rows[0]
            note = (f"byol decoded {b.get('images')} JPEGs once into its uint8 cache in {b.get('decode_s')} s "
                    f"(a later run maps the cache in {b.get('cached_load_s')} s); lightly decodes every image "
                    f"every epoch in its DataLoader workers. Data+views share: for byol the time in the engine's "
                    f"gather + views, for lightly the time the step waited for the DataLoader.")
            log(note)
            md += [f"**End to end, CIFAR-10 JPEG image folder ({b.get('images')} train images), batch {batch}, "
                   f"{steps} steps per measurement after warm-up**: {model}; lightly: LightlyDataset + "
                   f"BYOLTransform (same views: crop scale 0.2-1, otherwise the paper's) + DataLoader(2 workers, "
                   f"shuffle) + the same model from lightly's blocks", ""]
            md += table + ["", note, ""]

    peak1 = matmul_peak(**guard)
    results["matmul_peak_gflops"]["end"] = peak1
    # The host's speed drifts during a run (this VM's fp32 peak has ranged 138-245 GFLOP/s in one day): MFU
    # is taken against the higher of the two peaks, which gives the lower, conservative MFU.
    mfu_peak = max(peak, peak1["median"])
    results["matmul_peak_gflops"]["used_for_mfu"] = mfu_peak
    for key in ("step-r18", "step-demo"):
        for row in results["sections"].get(key, {}).get("rows", []):
            if row.get("achieved_gflops") and row["impl"] != "byol-bf16":
                row["mfu"] = round(row["achieved_gflops"] / mfu_peak, 3)
        if key in results["sections"]:
            table = "\n".join(fmt_table(results["sections"][key]["rows"], STEP_COLS))
            md = [table if line == f"@@step-table:{key}@@" else line for line in md]
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    a.json.write_text(json.dumps(results, indent=2) + "\n")

    head = [
        "## Side by side with the peers (benchmarks/peers.py)" + (" — QUICK SMOKE RUN, not comparable" if q else ""),
        "",
        f"`{command}` ({results['seconds']:.0f} s, nice {niceness}); set up with `bash benchmarks/setup_peers.sh`.",
        f"torch {v['torch']}, torchvision {v['torchvision']}, lightly {v['lightly']}, kornia {v['kornia']}, "
        f"byol-pytorch {v['byol-pytorch']}, Pillow {v['pillow']}, Python {v['python']}; byol {v['byol']} "
        f"({env['git']}); {a.threads} threads on {env['cpu']} ({env['cores']} cores). fp32 2048x2048 matmul peak "
        f"(median of 15): {peak:.1f} GFLOP/s at the start (other load {peak0['other_load_cores']:.2f} cores), "
        f"{peak1['median']:.1f} at the end; fp32 MFU uses the higher, {mfu_peak:.1f}.",
        "Every configuration runs in its own process (peak RSS is that process's ru_maxrss; 'with workers' is "
        "the sampled peak of the PSS summed over the process and its DataLoader workers); contenders alternate in rotating order, medians over the "
        "repetitions; 'byol speed-up' = byol's pairs/s / the row's. 'other load': the most CPU (in cores) that "
        f"other processes on the machine used during one of the row's kept measurements; a measurement above "
        f"{a.max_other_load} cores was repeated up to {retries} times and the cleanest kept.",
        "byol-pytorch runs with `use_simplicial_embeddings=False` (on by default in 0.9.1: a block that "
        "is not in the paper), `hidden_layer=-1`, the pre-made views fed through `augment_fn`/`augment_fn2` "
        "instead of its per-batch default augmentation; it still encodes both views as one concatenated batch.",
        "'malloc': byol's rows run with its CLI's default (freed memory kept in the process, byol/runtime.py: "
        "`keep`), the peers with glibc's defaults as they ship (`glibc`); `lightly+keepmem` is lightly's step "
        "given byol's setting.",
        "",
    ]
    print("\n" + "=" * 100 + "\nMarkdown for benchmarks/RESULTS.md:\n")
    print("\n".join(head + md))
    print(f"results written to {a.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Linear evaluation with SGD on augmented images: the paper's *ImageNet* linear protocol.

Protocol [BYOL App. C.1; DeepMind ``byol/linear_eval_experiment.py``], as implemented here:

- **encoder frozen**: every module in eval mode (BatchNorm uses its running statistics and never
  updates them), forward passes under ``torch.no_grad`` (no graph, no gradient reaches the encoder;
  its parameters are not given to the optimiser); each module's training flag is restored afterwards;
- **model**: ``nn.Linear(feature_dim, num_classes)``, initialised to zero (the convex problem then
  starts from the same point for every learning rate), on top of the encoder's pooled output;
- **optimiser**: SGD, Nesterov momentum 0.9, no weight decay by default (``weight_decay`` applies to
  the weight only, never the bias); learning rate ``base_lr * batch_size / 256`` (the paper's linear
  scaling) decayed to 0 with a cosine over all steps, per step, no warm-up;
- **training images**: a random resized crop (area ``crop_scale``, aspect ratio 3/4 - 4/3) and a
  horizontal flip (p = 0.5), drawn per sample and applied batched with :func:`byol.augment.apply_view`
  (a :class:`~byol.augment.ViewSpec` with every colour, blur and solarize probability at 0);
- **test (and validation) images**: no augmentation: :func:`byol.augment.eval_transform` (the whole
  image resized to ``size``), the view every other protocol of this library evaluates;
- **learning rate**: chosen from a small grid by top-1 on a class-stratified validation split
  carved from train (``val_fraction``; ties -> the earlier grid entry), then a fresh layer is
  trained on train + val with that rate and scored once on test. Top-1 and top-5 (when there are at
  least 5 classes).

Efficiency (the encoder dominates the cost; the layer is a single matmul):

- every step draws one augmented batch and runs the encoder on it **once**; all the learning rates
  of the grid are trained *simultaneously* on those features (one linear layer per rate, summed
  losses, one backward through the layers only), so choosing among ``G`` rates costs one pass of
  encoder forwards, not ``G``. The refit on train + val is a second pass;
- images stay uint8 until a batch is drawn; augmentation is batched tensor ops (no per-image Python);
  ``channels_last`` inputs for convolutional encoders; validation and test features are extracted
  once with :func:`byol.eval.extract_features`.

Departures from the paper (CPU-sized defaults; all are settings of :class:`LinearSGDSettings`):

============================  ===============================  =====================================
setting                        here (default)                   paper (ImageNet, ResNet-50)
============================  ===============================  =====================================
epochs                         10                               80
batch size                     256                              1024
base lr grid (x batch / 256)   0.4, 0.3, 0.2, 0.1, 0.05         the same
validation split               stratified 10% of train          10,009 held-out ImageNet train images
feature standardisation        yes (see below)                  no
train crop                     random resized crop, area        random resized crop, area
                               0.08 - 1 at the input size       0.08 - 1 at 224 px
test view                      whole image resized to ``size``  centre crop 224 of the 256 short side
============================  ===============================  =====================================

**Feature standardisation**: before training, the per-dimension mean and standard deviation of the
encoder's features are estimated once on augmented views of (up to ``stats_samples``) training
images, and the layer sees ``(f - mean) / std`` (constant dimensions are only centred). This is a
fixed affine map, so the classifier is still linear in the features; it makes one learning-rate grid
work for encoders whose features differ in scale by orders of magnitude (a random-init network vs a
trained one, a ``convnet`` vs a ResNet-50), which the paper, evaluating only ResNets, did not need.
``standardize=False`` gives the paper's raw features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol.augment import ViewSpec, apply_view, eval_transform
from byol.errors import ConfigError, DataError
from byol.eval.features import extract_features, frozen, is_conv
from byol.eval.finetune import topk_accuracy
from byol.eval.splits import stratified_split
from byol.eval.training import check_images, epoch_steps, seeded_generators, train_steps

__all__ = ["PAPER_LR_GRID", "LinearSGDSettings", "LinearHeads", "linear_sgd_eval", "train_linear_heads"]

#: The paper's base learning rates for the ImageNet linear protocol [BYOL App. C.1].
PAPER_LR_GRID: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1, 0.05)


@dataclass(frozen=True)
class LinearSGDSettings:
    """Hyper-parameters of the SGD linear protocol (defaults: CPU-sized; see the module docstring)."""

    lrs: tuple[float, ...] = PAPER_LR_GRID  #: base learning rates; lr = base * batch_size / 256
    epochs: float = 10.0
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    val_fraction: float = 0.1  #: stratified share of train used to choose the learning rate
    refit: bool = True  #: retrain the chosen rate on train + val before testing
    augment: bool = True  #: random resized crop + flip on training images (else the eval view)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    standardize: bool = True
    stats_samples: int = 4096  #: training images used to estimate the standardisation statistics
    eval_batch_size: int = 1024  #: batch size of validation/test feature extraction

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) for an impossible setting."""
        if not self.lrs or any(not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)) for lr in self.lrs):
            raise ConfigError(f"learning rates must be positive and finite, got {list(self.lrs)}")
        if len(set(self.lrs)) != len(self.lrs):
            raise ConfigError(f"learning-rate grid has duplicates: {list(self.lrs)}")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {lo:g} {hi:g}")
        if self.stats_samples < 2:
            raise ConfigError(f"stats_samples must be >= 2, got {self.stats_samples}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")

    def view_spec(self) -> ViewSpec:
        """The training augmentation: random resized crop + horizontal flip, nothing else."""
        return ViewSpec(crop_scale=tuple(self.crop_scale), flip_p=0.5, jitter_p=0.0, gray_p=0.0,
                        blur_p=0.0, solarize_p=0.0)

    def effective_lr(self, base_lr: float, n: int) -> float:
        """``base_lr * batch / 256`` with the batch size actually used on ``n`` images."""
        return float(base_lr) * min(self.batch_size, n) / 256.0

    def total_steps(self, n: int) -> int:
        """Optimizer steps on ``n`` images: full batches only (a short last batch is dropped)."""
        return epoch_steps(self.epochs, n, self.batch_size)


@dataclass
class LinearHeads:
    """Linear layers trained on one frozen encoder, one per base learning rate.

    ``weight [G, K, D]``, ``bias [G, K]``; features are standardised as ``(f - mean) / std`` first.
    """

    lrs: tuple[float, ...]
    weight: Tensor
    bias: Tensor
    mean: Tensor  #: ``[D]``
    std: Tensor  #: ``[D]``
    losses: list[list[float]]  #: per head, per step (the last entry is NaN if the head diverged)
    steps: int

    def logits(self, features: Tensor) -> Tensor:
        """``[G, N, K]`` logits of every head for raw features ``[N, D]``."""
        z = (features.to(self.mean.device, self.mean.dtype) - self.mean) / self.std
        return torch.einsum("nd,gkd->gnk", z, self.weight) + self.bias[:, None, :]

    @property
    def diverged(self) -> list[bool]:
        return [bool(ls) and not math.isfinite(ls[-1]) for ls in self.losses]


# ----------------------------------------------------------------------------------------------


def _encode(encoder: nn.Module, x: Tensor, channels_last: bool) -> Tensor:
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    f = encoder(x)
    return f.flatten(1) if f.ndim != 2 else f


def _feature_stats(
    encode: Callable[[Tensor, torch.Generator | None], Tensor], n: int, settings: LinearSGDSettings, seed: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Standardisation ``(mean, std)`` (float32 ``[D]`` on ``device``) of the frozen features of (up to)
    ``stats_samples`` augmented training images, one pass; without standardisation ``(0, 1)`` from one
    small batch (for the feature width). ``encode(indices, generator)`` gives features of those images."""
    with torch.no_grad():
        g_stats, g_stats_aug = seeded_generators(seed + 1_000_003, device)
        n_stats = min(n, settings.stats_samples) if settings.standardize else min(n, 2)
        pick = torch.randperm(n, generator=g_stats)[:n_stats]
        shift = s1 = s2 = None
        count = 0
        for start in range(0, pick.numel(), settings.eval_batch_size):
            f = encode(pick[start : start + settings.eval_batch_size], g_stats_aug).to(torch.float64)
            if shift is None:  # shifted sums: no cancellation for features far from 0
                shift = f.mean(0)
            f = f - shift
            s1 = f.sum(0) if s1 is None else s1 + f.sum(0)
            s2 = (f * f).sum(0) if s2 is None else s2 + (f * f).sum(0)
            count += f.shape[0]
        assert shift is not None and s1 is not None and s2 is not None
        dim = int(s1.shape[0])
        if settings.standardize:
            d1 = s1 / count
            mu = shift + d1
            sd = (s2 / count - d1 * d1).clamp_min(0.0).sqrt()
            sd = torch.where(sd > 1e-8 * (1.0 + mu.abs()), sd, torch.ones_like(sd))  # constant: centre only
            if not (torch.isfinite(mu).all() and torch.isfinite(sd).all()):
                raise DataError("the encoder's features contain NaN or inf")
        else:
            mu, sd = torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64)
    return mu.to(device=device, dtype=torch.float32), sd.to(device=device, dtype=torch.float32)


def _zero_heads(lrs: tuple[float, ...], num_classes: int, dim: int, n: int, settings: LinearSGDSettings,
                device: torch.device) -> tuple[list[Tensor], list[Tensor], torch.optim.Optimizer]:
    """``len(lrs)`` independent zero-initialised linear layers and one Nesterov SGD over all of them,
    each layer's weight and bias in param groups of its own rate (``base * batch / 256``)."""
    weights = [torch.zeros(num_classes, dim, device=device, requires_grad=True) for _ in lrs]
    biases = [torch.zeros(num_classes, device=device, requires_grad=True) for _ in lrs]
    groups = []
    for w, b, base in zip(weights, biases, lrs):
        lr = settings.effective_lr(base, n)
        groups.append({"params": [w], "lr": lr, "weight_decay": settings.weight_decay})
        groups.append({"params": [b], "lr": lr, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=settings.momentum, nesterov=settings.momentum > 0)
    return weights, biases, opt


def train_linear_heads(
    encoder: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    lrs: Sequence[float] | None = None,
    settings: LinearSGDSettings = LinearSGDSettings(),
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "linear-sgd",
) -> LinearHeads:
    """Train one zero-initialised linear layer per base learning rate on a frozen ``encoder``.

    ``images`` uint8 ``[N, C, H, W]`` (any device; batches are moved to ``device``), ``labels``
    int64 ``[N]``. ``lrs`` defaults to ``settings.lrs``. Every step draws one batch, augments it
    (when ``settings.augment``), runs the encoder on it once without gradients, and updates every
    layer with its own learning rate (``base * batch / 256``, cosine to 0, Nesterov SGD; the loop is
    :func:`byol.eval.training.train_steps`). A layer whose loss stops being finite is frozen where it
    is (and loses any selection). The encoder is never modified: eval mode throughout, its training
    flags restored afterwards.
    """
    settings.validate()
    lrs = tuple(float(v) for v in (settings.lrs if lrs is None else lrs))
    if not lrs or any(not (v > 0 and math.isfinite(v)) for v in lrs):
        raise ConfigError(f"learning rates must be positive and finite, got {list(lrs)}")
    images, labels = check_images(images, labels, "train")
    if num_classes < 1 or int(labels.max()) >= num_classes:
        raise DataError(f"label {int(labels.max())} out of range for num_classes={num_classes}")
    device = torch.device(device)
    n = int(images.shape[0])
    spec = settings.view_spec()
    channels_last = is_conv(encoder)

    def view(x: Tensor, gen: torch.Generator | None) -> Tensor:
        if settings.augment:
            return apply_view(x, spec, size, mean, std, gen)
        return eval_transform(x, size, mean, std)

    # inference_mode(False): usable from inside a caller's inference_mode block (the layers need autograd)
    with torch.inference_mode(False), frozen(encoder, device) as enc:
        mu, sd = _feature_stats(
            lambda idx, gen: _encode(enc, view(images[idx.to(images.device)].to(device), gen), channels_last),
            n, settings, seed, device)
        G = len(lrs)
        weights, biases, opt = _zero_heads(lrs, num_classes, int(mu.shape[0]), n, settings, device)
        losses: list[list[float]] = [[] for _ in range(G)]
        alive = [True] * G

        def step_loss(x: Tensor, y: Tensor) -> Tensor | None:
            with torch.no_grad():  # the encoder: no graph, BN in eval mode (running stats untouched)
                z = (_encode(enc, x, channels_last).float() - mu) / sd
            total_loss = None
            for i in range(G):
                if not alive[i]:
                    continue
                loss = F.cross_entropy(torch.addmm(biases[i], z, weights[i].t()), y)
                losses[i].append(float(loss.detach()))
                if not math.isfinite(losses[i][-1]):
                    alive[i] = False  # diverged: frozen as it is
                    continue
                total_loss = loss if total_loss is None else total_loss + loss
            return total_loss  # heads are independent: each gets its own gradient

        def best_live_loss() -> float | None:
            live = [losses[i][-1] for i in range(G) if alive[i]]
            return min(live) if live else None

        train_steps(opt, images, labels, loss=step_loss, augment=view, steps=settings.total_steps(n),
                    batch_size=settings.batch_size, seed=seed, device=device,
                    progress=desc if progress else None, status=best_live_loss)
    return LinearHeads(lrs=lrs, weight=torch.stack([w.detach() for w in weights]),
                       bias=torch.stack([v.detach() for v in biases]), mean=mu, std=sd, losses=losses,
                       steps=max((len(ls) for ls in losses), default=0))


def _eval_features(encoder, images, size, mean, std, settings: LinearSGDSettings, device) -> Tensor:
    return extract_features(encoder, images, size=size, mean=list(mean), std=list(std), device=device,
                            batch_size=settings.eval_batch_size)


def _head_scores(heads: LinearHeads, features: Tensor, labels: Tensor, i: int) -> dict[str, float]:
    if heads.diverged[i] or not torch.isfinite(heads.weight[i]).all():
        return {"top1": 0.0}
    logits = heads.logits(features)[i]
    return topk_accuracy(logits, labels.to(logits.device))


def linear_sgd_eval(
    encoder: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    num_classes: int | None = None,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    settings: LinearSGDSettings = LinearSGDSettings(),
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The SGD linear protocol: learning rate chosen on a validation split of ``train``, then refit.

    ``train`` and ``test`` are ``(uint8 images [N, C, H, W], int64 labels [N])``; ``size``,
    ``mean``, ``std`` are the encoder's input size and normalisation. Steps:

    1. carve a class-stratified, seeded validation split (``settings.val_fraction``) from train;
    2. train one layer per grid rate on the rest (one pass, see the module docstring) and score
       each on the un-augmented validation images; pick the best top-1 (ties -> earlier entry);
    3. with ``settings.refit``, train a fresh layer with that rate on all of train;
    4. score the test images (un-augmented).

    A one-value grid skips 1-2 and trains on all of train directly. Returns ``{"top1", "top5"
    (K >= 5), "lr" (base), "lr_effective", "val_top1_by_lr", "steps", "final_loss", "n_train",
    "n_val", "n_test", "num_classes", "dim", "refit", "seconds"}``; accuracies are percentages.
    """
    settings.validate()
    t0 = time.perf_counter()
    xtr, ytr = check_images(*train, "train")
    xte, yte = check_images(*test, "test")
    if xtr.shape[1] != xte.shape[1]:
        raise DataError(f"train and test images differ in channels: {xtr.shape[1]} vs {xte.shape[1]}")
    k_seen = int(max(ytr.max(), yte.max())) + 1
    if num_classes is None:
        num_classes = k_seen
    elif k_seen > num_classes:
        raise DataError(f"labels exceed num_classes={num_classes}")
    device = torch.device(device)
    kw = dict(num_classes=num_classes, size=size, mean=mean, std=std, settings=settings, seed=seed,
              device=device, progress=progress)
    grid = tuple(float(v) for v in settings.lrs)
    val_by: dict[float, float] = {}
    n_val = 0
    if len(grid) == 1:
        best = grid[0]
        heads = train_linear_heads(encoder, xtr, ytr, lrs=grid, desc="linear-sgd", **kw)
    else:
        tr_idx, va_idx = stratified_split(ytr, settings.val_fraction, seed)
        if va_idx.numel() == 0:
            raise DataError("too few training images per class to carve a validation split for the learning rate")
        n_val = int(va_idx.numel())
        heads = train_linear_heads(encoder, xtr[tr_idx], ytr[tr_idx], lrs=grid, desc=f"linear-sgd x{len(grid)} lrs",
                                   **kw)
        fva = _eval_features(encoder, xtr[va_idx], size, mean, std, settings, device)
        yva = ytr[va_idx]
        for i, lr in enumerate(grid):
            val_by[lr] = _head_scores(heads, fva, yva, i)["top1"]
            if log:
                state = "diverged" if heads.diverged[i] else f"final train loss {heads.losses[i][-1]:.3f}"
                log(f"  base lr {lr:g}: val top-1 {val_by[lr]:.2f}% ({state})")
        best = max(grid, key=lambda v: val_by[v])  # max() keeps the first of equal values
        if settings.refit:
            heads = train_linear_heads(encoder, xtr, ytr, lrs=(best,), desc=f"linear-sgd refit lr {best:g}", **kw)
    i = heads.lrs.index(best)
    fte = _eval_features(encoder, xte, size, mean, std, settings, device)
    out: dict = dict(_head_scores(heads, fte, yte, i))
    n_fit = int(xtr.shape[0]) if (len(grid) == 1 or settings.refit) else int(xtr.shape[0]) - n_val
    out.update(
        lr=best, lr_effective=settings.effective_lr(best, n_fit), val_top1_by_lr=val_by, steps=heads.steps,
        final_loss=heads.losses[i][-1] if heads.losses[i] else float("nan"), n_train=int(xtr.shape[0]),
        n_val=n_val, n_fit=n_fit, n_test=int(xte.shape[0]), num_classes=int(num_classes),
        dim=int(heads.weight.shape[2]), refit=bool(settings.refit and len(grid) > 1),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return out

"""Fine-tuning the whole encoder plus a linear head (semi-supervised and transfer fine-tune protocols).

Protocol [BYOL §4.2 and App. C.2/D.3, adapted to a CPU]:

- model: the encoder (all of it trainable) followed by ``nn.Linear(feature_dim, num_classes)``;
  BatchNorm in **train** mode while fine-tuning (batch statistics), eval mode for scoring;
- optimiser: SGD, Nesterov momentum 0.9, no weight decay (the semi-supervised protocol; the
  transfer protocol may grid over weight decay too), cosine decay of the learning rate to 0 over
  all steps (per step, no warm-up; the loop is :func:`byol.eval.training.train_steps`);
- augmentation: random crop with zero padding (``size // 8`` px a side at the input resolution)
  and horizontal flip, drawn per sample and applied batched (no per-image Python); the paper uses
  random-resized crop + flip at 224 px, which is too strong for 28-32 px images;
- hyper-parameters: every ``(lr, weight_decay)`` of the grid is trained from the same initial
  weights and scored on the validation split; the best validation top-1 wins (ties -> the earlier
  grid entry), and its model is scored once on the test split. With ``refit`` (validation was held
  out of the labeled set) the winner is retrained on train + val before testing.

The same function with a randomly initialised encoder is the supervised-from-scratch baseline.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol.augment import eval_transform
from byol.errors import ConfigError, DataError
from byol.eval.features import extract_features, is_conv
from byol.eval.training import check_images, epoch_steps, train_steps

__all__ = ["FinetuneSettings", "crop_flip", "finetune_eval", "train_classifier", "topk_accuracy"]


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyper-parameters of one fine-tuning protocol (defaults: CPU-sized; see docs/evaluation.md)."""

    #: 0.3 was added when 0.1, the old top, won twice; at 1% labels the demo encoder then chose 0.3 and 1.0
    #: was worse for both networks (docs/results.md), so the grid brackets the optimum
    lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    weight_decays: tuple[float, ...] = (0.0,)
    epochs: float = 30.0
    steps: int | None = None  #: total optimizer steps; overrides ``epochs`` when set
    batch_size: int = 128
    momentum: float = 0.9
    augment: bool = True
    pad: int | None = None  #: crop padding in px (default ``size // 8``)

    def validate(self) -> None:
        if not self.lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in self.lrs):
            raise ConfigError(f"learning rates must be positive, got {list(self.lrs)}")
        if not self.weight_decays or any(wd < 0 for wd in self.weight_decays):
            raise ConfigError(f"weight decays must be >= 0, got {list(self.weight_decays)}")
        if self.steps is None and not self.epochs > 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise ConfigError(f"batch size must be >= 2 (BatchNorm in train mode), got {self.batch_size}")

    def total_steps(self, n: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return epoch_steps(self.epochs, n, self.batch_size)  # full batches only (a short last one is dropped)


def crop_flip(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with zero padding (``pad`` px a side) + horizontal flip (p=0.5), per sample, batched.

    uint8 (or float) ``[B, C, H, W]`` in, same dtype/shape out, on the input's device.
    """
    b, c, h, w = images.shape
    dev = images.device
    gdev = generator.device if generator is not None else dev
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gdev).to(dev)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gdev).to(dev)
    flip = (torch.rand(b, generator=generator, device=gdev) < 0.5).to(dev)
    x = F.pad(images, (pad, pad, pad, pad)) if pad > 0 else images
    rows = oy[:, None] + torch.arange(h, device=dev)[None]  # [B, H]
    cols = torch.arange(w, device=dev)[None].expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + ox[:, None]  # [B, W]
    bi = torch.arange(b, device=dev)[:, None, None]
    out = x.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": .., "top5": ..}`` in %, for each k <= the number of classes."""
    out = {}
    labels = torch.as_tensor(labels).to(logits.device)
    for k in ks:
        if k <= logits.shape[1]:
            hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(1)
            out[f"top{k}"] = 100.0 * hit.double().mean().item()
    return out


def _feature_dim(encoder: nn.Module, channels: int, size: int, device: torch.device) -> int:
    d = getattr(encoder, "feature_dim", None)
    if isinstance(d, int):
        return d
    flags = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    with torch.no_grad():
        out = encoder(torch.zeros(2, channels, size, size, device=device))
    for m, t in flags:
        m.training = t
    return int(out.flatten(1).shape[1])


def train_classifier(
    encoder: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    lr: float,
    weight_decay: float = 0.0,
    settings: FinetuneSettings = FinetuneSettings(),
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, list[float]]:
    """Fine-tune a *copy* of ``encoder`` + a new linear head; returns (model, per-step losses).

    ``images`` uint8 ``[N, C, H, W]`` (CPU or ``device``), ``labels`` int64 ``[N]``.
    """
    device = torch.device(device)
    n = int(images.shape[0])
    if n < 2:
        raise DataError(f"fine-tuning needs at least 2 labeled images, got {n}")
    images, labels = check_images(images, labels, "train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # the copy is trained: channels_last for good (inputs below too), as pretraining does
        enc = copy.deepcopy(encoder).to(device)
        if is_conv(enc):
            enc = enc.to(memory_format=torch.channels_last)
        dim = _feature_dim(enc, int(images.shape[1]), size, device)
        head = nn.Linear(dim, num_classes).to(device)
    model = nn.Sequential(enc, nn.Flatten(1), head)
    # Nesterov SGD; weight decay (if any) on weights only, not on biases or BN parameters.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=settings.momentum, nesterov=True)
    pad = settings.pad if settings.pad is not None else max(1, size // 8)
    losses: list[float] = []

    def view(x: Tensor, g_aug: torch.Generator | None) -> Tensor:
        if settings.augment:
            x = crop_flip(x, pad, g_aug)
        return eval_transform(x, size, mean, std).contiguous(memory_format=torch.channels_last)

    def step_loss(x: Tensor, y: Tensor) -> Tensor | None:
        loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            losses.append(float("nan"))
            return None  # diverged (too large a learning rate): scored as it is, loses the selection
        losses.append(float(loss.detach()))
        return loss

    model.train()
    train_steps(opt, images.to(device), labels, loss=step_loss, augment=view, steps=settings.total_steps(n),
                batch_size=settings.batch_size, seed=seed, device=device)
    model.eval()
    return model, losses


def _scores(model, images, labels, size, mean, std, device) -> dict[str, float]:
    logits = extract_features(model, images, size=size, mean=list(mean), std=list(std), device=device, batch_size=512)
    logits = torch.nan_to_num(logits, nan=0.0)
    return topk_accuracy(logits, labels)


def finetune_eval(
    encoder: nn.Module | Callable[[], nn.Module],
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    num_classes: int,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    settings: FinetuneSettings = FinetuneSettings(),
    refit: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Grid over ``settings.lrs x settings.weight_decays`` chosen on ``val``; scores on ``test``.

    ``train``/``val``/``test`` are ``(uint8 images, int64 labels)``. ``encoder`` is copied for
    every grid point (a callable is called once and its result copied). With ``refit`` the chosen
    setting is retrained on ``train + val`` before testing. Returns ``{"top1", "top5"?, "lr",
    "weight_decay", "val_top1_by_setting", "steps", "n_train", "n_val", "n_test", "seconds"}``.
    """
    settings.validate()
    t0 = time.perf_counter()
    base = encoder() if callable(encoder) and not isinstance(encoder, nn.Module) else encoder
    grid = [(lr, wd) for wd in settings.weight_decays for lr in settings.lrs]
    xtr, ytr = train
    xva, yva = val
    xte, yte = test
    kw = dict(num_classes=num_classes, size=size, mean=mean, std=std, settings=settings, seed=seed, device=device)
    val_by: dict[str, float] = {}
    if len(grid) == 1:  # nothing to select: train once (on train + val when refitting)
        (lr, wd), = grid
        if refit:
            xtr = torch.cat([torch.as_tensor(xtr), torch.as_tensor(xva)])
            ytr = torch.cat([torch.as_tensor(ytr), torch.as_tensor(yva)])
        model, losses = train_classifier(base, xtr, ytr, lr=lr, weight_decay=wd, **kw)
        if not refit:
            val_by[f"lr={lr:g},wd={wd:g}"] = _scores(model, xva, yva, size, mean, std, device)["top1"]
    else:
        best = None
        for lr, wd in grid:
            model, losses = train_classifier(base, xtr, ytr, lr=lr, weight_decay=wd, **kw)
            acc = _scores(model, xva, yva, size, mean, std, device)["top1"] if math.isfinite(losses[-1]) else 0.0
            val_by[f"lr={lr:g},wd={wd:g}"] = acc
            if log:
                log(f"  lr={lr:g} wd={wd:g}: val top-1 {acc:.2f}% (final train loss {losses[-1]:.3f})")
            if best is None or acc > best[0]:  # ties -> the earlier grid entry
                best = (acc, lr, wd, model, losses)
        assert best is not None
        _, lr, wd, model, losses = best
        if refit:
            xtr = torch.cat([torch.as_tensor(xtr), torch.as_tensor(xva)])
            ytr = torch.cat([torch.as_tensor(ytr), torch.as_tensor(yva)])
            model, losses = train_classifier(base, xtr, ytr, lr=lr, weight_decay=wd, **kw)
    out: dict = dict(_scores(model, xte, yte, size, mean, std, device))
    out.update(
        lr=lr, weight_decay=wd, val_top1_by_setting=val_by, steps=len(losses),
        final_loss=losses[-1], n_train=int(len(xtr)), n_val=int(len(xva)),
        n_test=int(len(xte)), refit=refit, seconds=round(time.perf_counter() - t0, 2),
    )
    return out

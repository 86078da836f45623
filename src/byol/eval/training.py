"""The minibatch training loop shared by fine-tuning and the SGD linear probe.

Both protocols train for a fixed number of optimizer steps on shuffled minibatches of uint8 images,
with every parameter group's learning rate following :func:`byol.optim.schedules.warmup_cosine` (no
warm-up, cosine to 0 over all steps, per step: BYOL App. C.1 for the linear protocol, App. C.2 for
fine-tuning). What differs between them (the model, the augmentation, how a loss is made, when to
give up) comes in as callbacks.

Random draws are reproducible from one seed: batch order from a CPU generator, augmentation from a
generator on the training device (the same one on CPU), see :func:`seeded_generators`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from byol.errors import DataError
from byol.optim.schedules import warmup_cosine

__all__ = ["check_images", "epoch_steps", "seeded_generators", "shuffled_batches", "train_steps"]


def check_images(images: Tensor, labels: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """``(uint8 [N, 1|3, H, W] images, int64 [N] labels)`` or a one-line :class:`DataError` naming ``name``."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise DataError(f"{name} images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise DataError(f"{name} images must have 1 or 3 channels, got {images.shape[1]}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{name} labels must be 1-D with {images.shape[0]} entries, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(f"{name} labels must be integer class indices, got {labels.dtype}")
    if images.shape[0] == 0:
        raise DataError(f"{name} split is empty")
    labels = labels.to(torch.int64)
    if int(labels.min()) < 0:
        raise DataError(f"{name} labels have negative class indices")
    return images, labels


def epoch_steps(epochs: float, n: int, batch_size: int) -> int:
    """Optimizer steps for ``epochs`` passes of :func:`shuffled_batches` over ``n`` images (at least 1)."""
    return max(1, int(math.ceil(epochs * (n // min(batch_size, n)))))


def seeded_generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator | None]:
    """``(CPU generator for batch order, generator for augmentation draws on device)``, both seeded.

    On CPU both are the same generator (batch order and augmentation interleave on it); on CUDA the
    second is a CUDA generator; other accelerators (``None``) draw from their global RNG.
    """
    g = torch.Generator().manual_seed(int(seed))
    if device.type == "cpu":
        return g, g
    if device.type == "cuda":
        return g, torch.Generator(device=device).manual_seed(int(seed))
    return g, None


def shuffled_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """``steps`` batches of ``min(batch_size, n)`` indices into ``range(n)`` (CPU int64).

    Epochs of seeded permutations; the short last batch of an epoch is dropped. The next permutation
    is drawn only when a batch needs it, so draws from a shared ``generator`` keep their order.
    """
    b = min(batch_size, n)
    order, pos = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if pos + b > n:
            order, pos = torch.randperm(n, generator=generator), 0
        yield order[pos : pos + b]
        pos += b


def train_steps(
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    *,
    loss: Callable[[Tensor, Tensor], Tensor | None],
    steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    augment: Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
    warmup: int = 0,
    progress: str | None = None,
    status: Callable[[], float | None] | None = None,
) -> int:
    """Run up to ``steps`` optimizer steps of minibatch training; return how many were taken.

    Every step takes the next batch of :func:`shuffled_batches` (generators from
    :func:`seeded_generators` with ``seed``), moves it to ``device``, turns it into inputs with
    ``augment(batch, augmentation generator)`` (``None``: the batch as it is), sets each parameter
    group's lr to ``warmup_cosine(step, steps, the group's lr when called, warmup)``, and calls
    ``loss(inputs, labels)``: ``None`` stops the loop there (e.g. a diverged loss), a tensor is
    back-propagated and the optimizer steps. ``progress`` is a progress-bar title (``None``: no
    bar); ``status()`` supplies the loss shown on it.
    """
    g, g_aug = seeded_generators(seed, device)
    peaks = [float(group["lr"]) for group in optimizer.param_groups]
    ys = labels.to(device)
    bar = None
    if progress is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", desc=progress, leave=False)
    done = 0
    try:
        for step, idx in enumerate(shuffled_batches(int(images.shape[0]), batch_size, steps, g)):
            x = images[idx.to(images.device)].to(device, non_blocking=True)
            if augment is not None:
                x = augment(x, g_aug)
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = warmup_cosine(step, steps, peak, warmup)
            with torch.enable_grad():
                value = loss(x, ys[idx.to(device)])
                if value is None:
                    break
                optimizer.zero_grad(set_to_none=True)
                value.backward()
            optimizer.step()
            done += 1
            if bar is not None:
                bar.update(1)
                shown = status() if status is not None and (step % 20 == 0 or step == steps - 1) else None
                if shown is not None:
                    bar.set_postfix(loss=f"{shown:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return done

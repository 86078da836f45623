"""The training device and its precision: ``train.device`` / ``train.amp`` turned into torch objects."""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch

PRECISION_NAMES = {"off": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when ``n`` is given (``train.threads`` / ``--threads``)."""
    if n:
        torch.set_num_threads(n)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on x86 CPUs with AMX tiles (Intel Sapphire Rapids and later), where oneDNN runs bf16 matmuls
    and convolutions several times faster than fp32 (measured on the development machine: 2048^2 matmul
    1,249 vs 226 GFLOP/s). Elsewhere CPU bf16 is emulated and far slower than fp32 (under 1 GFLOP/s
    measured on an AVX2 host), so it must never be chosen automatically there."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x; absent = unknown
    try:
        return bool(check()) if check is not None else False
    except Exception:  # noqa: BLE001 - any failure means "don't rely on it"
        return False


def cuda_has_bf16() -> bool:
    """True on GPUs with native bf16 (NVIDIA Ampere and later): same range as fp32, no loss scaling."""
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    except Exception:  # noqa: BLE001 - an old torch or a broken driver: do not rely on it
        return False


def resolve_amp(device: torch.device, amp: str) -> str:
    """The precision ``amp`` means on ``device``: ``auto`` is bf16 on GPUs that support it natively, else
    fp16 on CUDA (with a gradient scaler), bf16 on CPUs with AMX (a departure from fp32 training:
    docs/departures.md), off elsewhere."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if cuda_has_bf16() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "off"


def autocast_for(device: torch.device, amp: str):
    """The autocast context and gradient scaler for ``amp`` (``auto``: see :func:`resolve_amp`)."""
    amp = resolve_amp(device, amp)
    if amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and amp == "bf16" and not cpu_has_fast_bf16():
        warnings.warn("bf16 autocast on a CPU without AMX is far slower than fp32 (set train.amp=off)", stacklevel=2)
    scaler = torch.amp.GradScaler(device.type) if (dtype == torch.float16 and device.type == "cuda") else None
    return torch.autocast(device_type=device.type, dtype=dtype), scaler


def precision_name(device: torch.device, amp: str) -> str:
    """What a run summary records: ``fp32``, ``bf16 autocast`` or ``fp16 autocast``."""
    return PRECISION_NAMES[resolve_amp(device, amp)]

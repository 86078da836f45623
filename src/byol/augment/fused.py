"""CPU fast path for the views: one fused C kernel per view (``_fused_views.c``), compiled on first use.

The eager pipeline (:mod:`byol.augment.ops`) makes ~100 passes over the whole batch per view; the kernel runs
every op of one sample while the sample sits in L1 cache (12 KB at 32 px RGB), with the batch split over
``torch.get_num_threads()`` threads once per call. It computes the same function from the same per-sample
parameters (drawn in Python by :func:`byol.augment.views.sample_view_params`), so results agree with the
eager ops to float rounding (tested); speed is in ``benchmarks/RESULTS.md``.

It is used for float32 views on CPU with bilinear crops. It is compiled with the system C compiler
(``$CC``, else ``cc``/``gcc``/``clang``) into ``$BYOL_CACHE_DIR/kernels`` (default ``~/.cache/byol/kernels``) the first time it is
needed (about a second), keyed by the source, the compiler and the CPU. A cache directory or library that is
not private to the user (another owner, or writable by group/others) is never loaded: the kernel is then
built in a private temporary directory, with one warning. Without a compiler, or when
compiling fails, byol warns once and uses the eager ops: same results, slower. ``BYOL_FUSED_VIEWS=0``
turns the fast path off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from byol.atomic import atomic_target
from byol.augment import ops
from byol.augment.spec import ViewSpec

__all__ = ["available", "supports", "usable", "fused_view", "compile_kernel"]

_SOURCE = Path(__file__).with_name("_fused_views.c")
# -fno-trapping-math lets the compiler if-convert (and so vectorise) the hue's selects; it changes no value.
_BASE_FLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-std=c99", "-shared", "-fPIC", "-pthread"]
_FLAGS = _BASE_FLAGS + ["-march=native"]
_FALLBACK_FLAGS = _BASE_FLAGS  # compilers without -march=native

_lock = threading.Lock()
_lib: Any = None
_tried = False
_private: Path | None = None  #: this process's own build directory, when the cache directory is not private


def _enabled() -> bool:
    return os.environ.get("BYOL_FUSED_VIEWS", "1").strip().lower() not in ("0", "off", "false", "no")


def _cache_dir() -> Path:
    """``$BYOL_CACHE_DIR/kernels``, else ``~/.cache/byol/kernels`` (beside the image cache of byol.data)."""
    env = os.environ.get("BYOL_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "byol") / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name.split()[0]):
            return name
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the machine and its CPU flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    flags += line
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        pass
    return platform.machine() + platform.processor() + flags


def _private_to_me(path: Path) -> bool:
    """Whether ``path`` is owned by this user and not writable by group or others (so nobody else can
    have put a library there for ctypes to load)."""
    st = path.stat()
    return (not hasattr(os, "getuid") or st.st_uid == os.getuid()) and not st.st_mode & 0o022


def _build_dir(out_dir: Path) -> Path:
    """``out_dir`` (created private if missing) when it is private to this user; else, with one warning, a
    private temporary directory of this process."""
    global _private
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _private_to_me(out_dir):
            return out_dir
    except OSError:
        pass
    if _private is None:
        _private = Path(tempfile.mkdtemp(prefix="byol-kernels-"))
        warnings.warn(f"the view-kernel cache {out_dir} is not private to this user (another owner, or writable by "
                      f"group/others): building the kernel in {_private} instead", stacklevel=3)
    return _private


def compile_kernel(cache_dir: Path | None = None, compiler: str | None = None) -> Path:
    """Compile ``_fused_views.c`` (or reuse the cached build) and return the shared library's path.

    Raises RuntimeError (with the compiler's message) when there is no compiler or the build fails.
    The build goes to a temporary file first and is renamed into place, so concurrent processes (e.g. one
    per GPU under torchrun) never load a half-written library.
    """
    cc = compiler or _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC, or install gcc/clang)")
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + cc.encode() + " ".join(_FLAGS).encode() + _cpu_signature().encode()).hexdigest()
    out_dir = _build_dir(cache_dir or _cache_dir())
    lib = out_dir / f"fused_views_{key[:16]}.so"
    if lib.exists() and _private_to_me(lib):
        return lib
    errors = []
    with atomic_target(lib) as tmp:
        tmp.touch(mode=0o600, exist_ok=False)  # private from the start, as the library must be to be loaded
        for flags in (_FLAGS, _FALLBACK_FLAGS):
            cmd = cc.split() + flags + [str(_SOURCE), "-o", str(tmp), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if res.returncode == 0:
                break
            errors.append(f"$ {' '.join(cmd)}\n{res.stderr.strip()}")
        else:
            raise RuntimeError("compiling the fused view kernel failed:\n" + "\n".join(errors))
    return lib


def _load() -> Any:
    global _lib, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        try:
            lib = ctypes.CDLL(str(compile_kernel()))
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            warnings.warn(f"fast CPU views unavailable, using the slower eager ops ({str(e).splitlines()[0]})",
                          stacklevel=2)
            return None
        fn = lib.byol_fused_view
        p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        fn.argtypes = [p, i, i, i, i, i, p, i, p, p, p, p, p, p, p, i, i, p, p, p, i, i, p, f, p, p, i]
        fn.restype = ctypes.c_int
        _lib = lib
        return _lib


def available() -> bool:
    """Whether the fused kernel is enabled and loads (compiling it on the first call)."""
    return _enabled() and _load() is not None


def supports(images: Tensor, spec: ViewSpec, dtype: torch.dtype) -> bool:
    """Whether :func:`fused_view` handles this batch and view (else the caller uses the eager ops)."""
    return (
        images.dtype in (torch.uint8, torch.float32)
        and images.shape[1] in (1, 3)
        and usable(images.device, spec, dtype)
    )


def usable(device: torch.device | str, spec: ViewSpec, dtype: torch.dtype = torch.float32) -> bool:
    """Whether views of ``spec`` on ``device`` go through the kernel (for uint8 or float32 1/3-channel batches)."""
    return (
        torch.device(device).type == "cpu"
        and dtype == torch.float32
        and spec.interpolation == "bilinear"
        and available()
    )


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def fused_view(images: Tensor, spec: ViewSpec, size: int, mean: Tensor, std: Tensor, params: dict) -> Tensor:
    """The view of ``images`` (uint8 or float32 in [0, 1], ``[B, C, H, W]`` on CPU) for drawn ``params``.

    Equals ``views._view_from_float(images / 255, spec, size, mean, std, params)`` to float rounding.
    Call only when :func:`supports` is true.
    """
    lib = _load()
    x = images.contiguous()
    B, C, H, W = x.shape
    theta = ops.crop_theta(params["boxes"], H, W, params["flip"])
    th = torch.stack([theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2]], dim=1).contiguous()

    def vec(p: Tensor | None, on: bool) -> Tensor | None:
        return p.to(torch.float32).contiguous() if (on and p is not None) else None

    def mask(m: Tensor, on: bool) -> Tensor | None:
        return m.to(torch.uint8).contiguous() if on else None

    jit = spec.uses_jitter
    jitter = mask(params["jitter"], jit)
    bright = vec(params["brightness"], jit and spec.brightness > 0)
    contrast = vec(params["contrast"], jit and spec.contrast > 0)
    sat = vec(params["saturation"], jit and spec.saturation > 0)
    hue = vec(params["hue"], jit and spec.hue > 0)
    order = params["order"].to(torch.int64).contiguous()
    gray = mask(params["gray"], spec.gray_p > 0)
    K = int(params["blur_kernel"])
    use_blur = spec.blur_p > 0 and K > 1
    blur = mask(params["blur"], use_blur)
    taps = ops.gaussian_kernels(params["sigma"].to(torch.float32), K).contiguous() if use_blur else None
    solar = mask(params["solarize"], spec.solarize_p > 0)
    m = mean.to(torch.float32).reshape(-1).expand(C).contiguous()
    s = std.to(torch.float32).reshape(-1).expand(C).contiguous()
    out = torch.empty(B, C, size, size, dtype=torch.float32)
    rc = lib.byol_fused_view(
        x.data_ptr(), int(x.dtype == torch.float32), B, C, H, W, out.data_ptr(), size, th.data_ptr(),
        _ptr(jitter), _ptr(bright), _ptr(contrast), _ptr(sat), _ptr(hue), order.data_ptr(),
        int(spec.brightness_mode == "multiplicative"), int(spec.saturation_mode == "hsv"), _ptr(gray), _ptr(blur),
        _ptr(taps), K, int(spec.blur_padding == "zeros"), _ptr(solar), float(spec.solarize_threshold),
        m.data_ptr(), s.data_ptr(), max(1, torch.get_num_threads()),
    )
    if rc != 0:
        raise MemoryError("the fused view kernel could not allocate its scratch buffer")
    return out

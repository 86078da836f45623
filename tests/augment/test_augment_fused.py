"""The fused CPU view kernel (byol.augment.fused) against the eager ops it replaces, its build cache (keys,
concurrent builds) and its fallback when no compiler is available. Builds go to a private cache
(tests/augment/conftest.py)."""

import ctypes
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from byol.augment import TwoViewAugment, apply_view, fused, paper_views, views


@pytest.fixture(autouse=True)
def _needs_the_kernel(kernel_cache):
    # A fixture, not a skipif mark: a mark's condition runs at collection, before kernel_cache points the
    # build at the private cache, so it would compile into the user's cache.
    if not fused.available():
        pytest.skip("no C compiler: the fused kernel is not built")

MEAN3, STD3 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
T, T_PRIME = paper_views()


def _norm(C):
    return views._mean_std(MEAN3[:C] if C == 3 else (0.5,), STD3[:C] if C == 3 else (0.25,), C, "cpu", torch.float32)


def _both(images, spec, size, seed=0):
    """(eager, fused) outputs of one view for the same drawn parameters."""
    B, C, H, W = images.shape
    m, s = _norm(C)
    params = views.sample_view_params(B, H, W, spec, size, torch.Generator().manual_seed(seed), "cpu")
    eager = views._view_from_float(views._to_float(images, torch.float32), spec, size, m, s, params)
    return eager, fused.fused_view(images, spec, size, m, s, params)


def _images(B, C, H, W, seed=0):
    return torch.randint(0, 256, (B, C, H, W), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


CASES = {
    "paper T": (T, 32, 32, 32),
    "paper T'": (T_PRIME, 32, 32, 32),
    "upscale, 7-tap blur": (T, 28, 28, 64),
    "downscale, non-square": (T_PRIME, 48, 40, 24),
    "multiplicative brightness, threshold 0.3": (
        T_PRIME.replace(brightness_mode="multiplicative", brightness=0.6, solarize_threshold=0.3, solarize_p=0.5),
        32, 32, 32,
    ),
    "fixed jitter order, strong hue": (T.replace(jitter_random_order=False, hue=0.5, jitter_p=1.0), 32, 32, 32),
    "no jitter, all gray": (T.replace(jitter_p=0.0, gray_p=1.0), 16, 16, 16),
    "the paper's code's saturation (HSV) and blur padding (zeros)": (
        T.replace(saturation_mode="hsv", blur_padding="zeros", jitter_p=1.0, saturation=0.8), 28, 28, 64,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_view_equals_the_eager_ops(name):
    spec, H, W, size = CASES[name]
    eager, fast = _both(_images(200, 3, H, W), spec, size)
    assert fast.shape == eager.shape and fast.dtype == torch.float32
    # normalized outputs (std ~0.23): 1e-4 is ~2.5e-5 in [0, 1] units, i.e. float rounding only
    assert (fast - eager).abs().max().item() < 1e-4


def test_fused_view_at_imagenet_size_with_the_papers_23_tap_blur():
    """224 px: the eager blur takes its grouped-convolution branch (> 7 taps); the kernel must still agree."""
    for spec in (T, T_PRIME.replace(blur_p=1.0), T.replace(saturation_mode="hsv", blur_padding="zeros")):
        eager, fast = _both(_images(6, 3, 256, 240), spec, 224)
        assert (fast - eager).abs().max().item() < 1e-4


def test_fused_view_one_channel_and_float_input():
    x = _images(64, 1, 20, 20)
    eager, fast = _both(x, T_PRIME.replace(solarize_p=0.5), 16)
    assert (fast - eager).abs().max().item() < 1e-4
    xf = _images(64, 3, 20, 20).float() / 255.0
    eager, fast = _both(xf, T, 16)
    assert (fast - eager).abs().max().item() < 1e-4


def test_fused_view_of_a_non_contiguous_batch():
    x = _images(32, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    eager, fast = _both(x, T, 24)
    assert (fast - eager).abs().max().item() < 1e-4


def test_each_op_changes_the_output():
    """The comparison above would pass if both paths skipped an op; check every op really acts."""
    x = _images(64, 3, 32, 32)
    base = T.replace(jitter_p=0.0, gray_p=0.0, blur_p=0.0, flip_p=0.0)
    m, s = _norm(3)
    params = views.sample_view_params(64, 32, 32, base, 32, torch.Generator().manual_seed(0), "cpu")
    ref = fused.fused_view(x, base, 32, m, s, params)
    for change in (
        dict(jitter_p=1.0, contrast=0.0, saturation=0.0, hue=0.0),  # brightness alone
        dict(jitter_p=1.0, brightness=0.0, saturation=0.0, hue=0.0),  # contrast alone
        dict(jitter_p=1.0, brightness=0.0, contrast=0.0, hue=0.0),  # saturation alone
        dict(jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0),  # hue alone
        dict(jitter_p=1.0, brightness=0.0, contrast=0.0, hue=0.0, saturation_mode="hsv"),
        dict(gray_p=1.0),
        dict(blur_p=1.0),
        dict(blur_p=1.0, blur_padding="zeros"),
        dict(solarize_p=1.0),
        dict(flip_p=1.0),
    ):
        spec = base.replace(**change)
        p = views.sample_view_params(64, 32, 32, spec, 32, torch.Generator().manual_seed(0), "cpu")
        out = fused.fused_view(x, spec, 32, m, s, p)
        eager = views._view_from_float(views._to_float(x, torch.float32), spec, 32, m, s, p)
        assert (out - ref).abs().max().item() > 0.05, change
        assert (out - eager).abs().max().item() < 1e-4, change


def test_the_reference_modes_change_the_fused_output():
    """The fused kernel honours saturation_mode and blur_padding (the comparison with the eager ops above
    would also pass if both ignored them)."""
    x = _images(64, 3, 32, 32)
    m, s = _norm(3)
    base = T.replace(jitter_p=1.0, brightness=0.0, contrast=0.0, hue=0.0, blur_p=1.0, flip_p=0.0)
    p = views.sample_view_params(64, 32, 32, base, 32, torch.Generator().manual_seed(0), "cpu")
    ref = fused.fused_view(x, base, 32, m, s, p)
    hsv = fused.fused_view(x, base.replace(saturation_mode="hsv"), 32, m, s, p)
    zeros = fused.fused_view(x, base.replace(blur_padding="zeros"), 32, m, s, p)
    assert (hsv - ref).abs().max().item() > 0.05
    edge = torch.ones(32, 32, dtype=torch.bool)
    edge[1:-1, 1:-1] = False
    assert (zeros - ref)[..., edge].mean().item() < -0.05  # the zeros darken the border (3 taps: 1 px)
    assert (zeros - ref)[..., ~edge].abs().max().item() < 1e-5  # and only the border


def test_thread_count_does_not_change_the_result():
    x = _images(50, 3, 32, 32)
    m, s = _norm(3)
    params = views.sample_view_params(50, 32, 32, T, 32, torch.Generator().manual_seed(3), "cpu")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused.fused_view(x, T, 32, m, s, params)
        torch.set_num_threads(2)
        two = fused.fused_view(x, T, 32, m, s, params)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)


def test_two_view_augment_uses_it_and_matches_the_eager_path(monkeypatch):
    x = _images(128, 3, 32, 32)
    aug = TwoViewAugment(T, T_PRIME, 32, MEAN3, STD3)
    f1, f2 = aug(x, torch.Generator().manual_seed(7))
    monkeypatch.setenv("BYOL_FUSED_VIEWS", "0")
    assert not fused.supports(x, T, torch.float32)
    e1, e2 = aug(x, torch.Generator().manual_seed(7))
    assert (f1 - e1).abs().max().item() < 1e-4 and (f2 - e2).abs().max().item() < 1e-4
    single = apply_view(x, T, 32, MEAN3, STD3, torch.Generator().manual_seed(1))
    monkeypatch.delenv("BYOL_FUSED_VIEWS")
    assert (apply_view(x, T, 32, MEAN3, STD3, torch.Generator().manual_seed(1)) - single).abs().max() < 1e-4


def test_backend_names_the_path_the_views_take(monkeypatch):
    aug = TwoViewAugment(T, T_PRIME, 32, MEAN3, STD3)
    assert aug.backend("cpu") == "fused CPU kernel"
    assert TwoViewAugment(T, T_PRIME.replace(interpolation="bicubic"), 32, MEAN3, STD3).backend("cpu") == "torch ops"
    assert aug.backend("cuda") == "torch ops"
    monkeypatch.setenv("BYOL_FUSED_VIEWS", "0")
    assert aug.backend("cpu") == "torch ops"


def test_not_used_for_bicubic_or_non_cpu_float32():
    x = _images(4, 3, 8, 8)
    assert fused.supports(x, T, torch.float32)
    assert not fused.supports(x, T.replace(interpolation="bicubic"), torch.float32)
    assert not fused.supports(x, T, torch.float64)
    assert not fused.supports(x.to(torch.int16), T, torch.float32)


def test_the_kernel_is_built_in_the_private_cache_and_reused(kernel_cache, tmp_path_factory):
    lib = fused.compile_kernel()  # the default place: $BYOL_CACHE_DIR/kernels
    assert lib.parent == kernel_cache and kernel_cache.is_relative_to(tmp_path_factory.getbasetemp())
    mtime = lib.stat().st_mtime_ns
    assert fused.compile_kernel() == lib and lib.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert list(kernel_cache.iterdir()) == [lib]  # no temporary left behind


def _compiler_script(path: Path, body: str) -> str:
    """An executable shell script standing in for the C compiler; ``$out`` is the file after ``-o``."""
    path.write_text('#!/bin/sh\nout=""; prev=""\nfor a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done\n'
                    + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("change", ["source", "compiler", "cpu"])
def test_a_new_source_compiler_or_cpu_is_a_new_build(change, tmp_path, monkeypatch):
    """The cache key covers what the library depends on: a stale build is never reused."""
    log = tmp_path / "builds.log"
    stand_in = 'echo "$0" >> "%s"; echo "library from $0" > "$out"' % log  # records each build, no real compile
    cc = _compiler_script(tmp_path / "cc", stand_in)
    cache = tmp_path / "kernels"
    old = fused.compile_kernel(cache, compiler=cc)
    assert fused.compile_kernel(cache, compiler=cc) == old and len(log.read_text().splitlines()) == 1

    if change == "source":
        edited = tmp_path / "_fused_views.c"
        edited.write_bytes(fused._SOURCE.read_bytes() + b"\n/* edited */\n")
        monkeypatch.setattr(fused, "_SOURCE", edited)
    elif change == "compiler":
        cc = _compiler_script(tmp_path / "another-cc", stand_in)
    else:
        monkeypatch.setattr(fused, "_cpu_signature", lambda: "x86_64 another CPU flags: sse2")
    new = fused.compile_kernel(cache, compiler=cc)
    assert new != old and new.is_file() and len(log.read_text().splitlines()) == 2  # built, not reused
    assert sorted(cache.iterdir()) == sorted([old, new])  # the old build is left as it was


def test_a_build_that_starts_while_another_is_writing_gets_a_whole_library(tmp_path):
    """Two builds into one empty cache (e.g. one process per GPU): both succeed and load one whole library.

    The compiler is slowed down and creates its output first, as a linker does, so the second build starts
    while the first one's output exists but is still empty: a build written in place would hand it out.
    """
    started = tmp_path / "started"
    cc = _compiler_script(tmp_path / "slow-cc", f': > "$out"; touch "{started}"; sleep 1; exec {fused._compiler()} "$@"')
    cache = tmp_path / "kernels"
    results: dict[str, object] = {}

    def build_and_load(name: str) -> None:
        try:
            lib = fused.compile_kernel(cache, compiler=cc)
            ctypes.CDLL(str(lib)).byol_fused_view  # what fused._load does next; fails on a torn file
            results[name] = lib
        except Exception as e:  # reported by the asserts below
            results[name] = e

    first = threading.Thread(target=build_and_load, args=("first",))
    first.start()
    deadline = time.monotonic() + 120
    while not started.exists() and first.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=build_and_load, args=("second",))
    second.start()
    first.join(300)
    second.join(300)
    assert isinstance(results["first"], Path) and results["first"] == results["second"], results
    assert list(cache.iterdir()) == [results["first"]]  # one library, no temporary left behind


def test_failed_build_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="compiling the fused view kernel failed"):
        fused.compile_kernel(tmp_path, compiler="false")
    assert list(tmp_path.iterdir()) == []


def test_without_a_compiler_views_fall_back_to_the_eager_ops(monkeypatch, tmp_path):
    x = _images(64, 3, 16, 16)
    aug = TwoViewAugment(T, T_PRIME, 16, MEAN3, STD3)
    fast = aug(x, torch.Generator().manual_seed(5))
    monkeypatch.setenv("BYOL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "_compiler", lambda: None)
    monkeypatch.setattr(fused, "_tried", False)
    monkeypatch.setattr(fused, "_lib", None)
    with pytest.warns(UserWarning, match="no C compiler"):
        assert not fused.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the build is tried once per process
        slow = aug(x, torch.Generator().manual_seed(5))
    for a, b in zip(fast, slow):
        assert (a - b).abs().max().item() < 1e-4

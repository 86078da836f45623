import os
from pathlib import Path

import pytest
import torch
from PIL import Image

#: where the Debian package dataset-fashion-mnist (what `make data` installs) puts the four IDX files
REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Deterministic, small-footprint tests on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def labeled_images():
    """120 generated 16x16 grayscale images in 3 classes (bright square / dark square / stripes)."""
    g = torch.Generator().manual_seed(0)
    n, s = 40, 16
    base = torch.randint(0, 60, (3 * n, 1, s, s), generator=g, dtype=torch.uint8)
    base[:n, :, 4:12, 4:12] += 180
    base[n : 2 * n, :, 2:14, 2:14] += 90
    base[2 * n :, :, :, ::3] += 150
    labels = torch.arange(3).repeat_interleave(n)
    return base, labels


@pytest.fixture(autouse=True)
def _restore_threads():
    """A test that runs the CLI with --threads changes torch's process-wide thread count: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_folder(tmp_path, labeled_images):
    images, labels = labeled_images
    root = tmp_path / "imgs"
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / f"class{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(d / f"{i:03d}.png")
    (root / "class0" / "broken.png").write_bytes(b"not an image at all")
    return root


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels with (almost) no data: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def junk_folder(tmp_path):
    """Two classes of 20 good 16x16 RGB images plus one file of every bad kind a user's folder holds.

    Returns ``(root, expect)``: ``expect["used"]`` images, ``expect["skipped"]`` {name: reason} and
    ``expect["converted"]`` {conversion: count} (what loading at ``image_size=16`` must report)."""
    import io

    import numpy as np

    root = tmp_path / "junk"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    rgb = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "a" / "notes.jpg").write_text("this is not an image")
    (root / "a" / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))  # PIL refuses it at open
    (root / "b" / "bomb2.png").write_bytes(_png_header_only(10_000, 10_000))  # PIL only warns: refused by byol
    os.symlink(root / "a" / "gone.png", root / "b" / "link.png")  # a broken symlink
    os.close(os.open(os.fsencode(root / "b") + b"/\xff\xfe.jpg", os.O_CREAT | os.O_WRONLY, 0o644))  # empty, not UTF-8
    rgb.save(root / "b" / "png-named.jpg", "PNG")  # wrong extension: used
    Image.fromarray(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)).save(root / "b" / "tiny.png")
    rgb.convert("CMYK").save(root / "b" / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (16, 16), dtype=np.uint16)).save(root / "b" / "deep.png")  # 16-bit
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "b" / "palette.png")
    rgb.convert("RGBA").save(root / "b" / "alpha.png")
    with open(os.fsencode(root / "b") + b"/caf\xe9.png", "wb") as f:  # a good image with a Latin-1 name
        rgb.save(f, "PNG")
    locked = root / "b" / "locked.png"
    rgb.save(locked)
    locked.chmod(0)
    skipped = {"a/empty.png": "empty file", "a/truncated.jpg": "truncated", "a/notes.jpg": "not an image",
               "a/bomb.png": "too large (decompression bomb?)", "b/bomb2.png": "too large (decompression bomb?)",
               "b/link.png": "broken symlink", os.fsdecode(b"b/\xff\xfe.jpg"): "empty file"}
    used = 40 + 8
    if os.geteuid() != 0:  # root reads any file
        skipped["b/locked.png"] = "permission denied"
        used -= 1
    converted = {"upscaled (smaller than 16 px)": 1, "CMYK to RGB": 1, "16-bit or float to 8-bit": 1,
                 "palette to RGB": 1, "transparency composited on black": 1}
    return root, {"used": used, "skipped": skipped, "converted": converted}


def _timed(key) -> bool:
    """A measured duration (``elapsed``, ``elapsed_s``, ``eval_seconds``, ...): never equal between two runs."""
    return isinstance(key, str) and (key in ("elapsed", "elapsed_s") or key.endswith("seconds"))


def _assert_equal_nested(a, b, where: str) -> None:
    """``a`` and ``b`` (nested dicts/lists of tensors and plain values) are equal, tensors bit for bit, but
    for the measured durations in them."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        same = torch.equal(a, b)  # (not in the assert: pytest would print both tensors)
        assert same, f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            if not _timed(k):
                _assert_equal_nested(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


class ResumeChecks:
    """What a resume test asserts beyond equal weights (seeded runs retrained from step 0 end equal too):
    where each resumed process started, and that the optimizer, the random states and the loop state equal
    an uninterrupted run's."""

    @staticmethod
    def metrics_size(run) -> int:
        """Where the next process's rows will start in ``run/metrics.jsonl`` (its size in bytes)."""
        f = run / "metrics.jsonl"
        return f.stat().st_size if f.exists() else 0

    @staticmethod
    def first_logged_step(run, offset: int) -> int:
        """The step of the first loss row appended to ``run/metrics.jsonl`` after byte ``offset``: a resumed
        process logs the step after its checkpoint's first (a run that ignored the checkpoint: step 1)."""
        import json

        with open(run / "metrics.jsonl", "rb") as fh:
            fh.seek(offset)
            rows = [json.loads(line) for line in fh.read().decode().splitlines() if line.strip()]
        return next(r["step"] for r in rows if "loss" in r)

    @staticmethod
    def assert_same_training_state(a: dict, b: dict) -> None:
        """Two checkpoints hold the same method, optimizer (momenta, lr), random states and loop position."""
        for key in ("method", "optimizer", "scaler", "state"):
            _assert_equal_nested(a[key], b[key], key)
        for key in ("torch", "augment", "augment_device"):
            _assert_equal_nested(a["rng"][key], b["rng"][key], f"rng.{key}")


@pytest.fixture
def resume_checks() -> type[ResumeChecks]:
    return ResumeChecks


@pytest.fixture(scope="session")
def real_fashion_mnist_dir() -> Path:
    """The real Fashion-MNIST folder. Where it is missing the test is skipped with the way to install it,
    except under ``BYOL_REQUIRE_REAL_DATA=1`` (set by ``.ci/run``): there the test fails, so CI cannot pass
    with the real-data tests silently skipped."""
    from byol.data import torchvision_sets

    if all((REAL_FASHION_MNIST / f"{stem}.gz").is_file() for stem in torchvision_sets.FASHION_MNIST_FILES):
        return REAL_FASHION_MNIST
    message = f"real Fashion-MNIST not installed in {REAL_FASHION_MNIST} (`make data` as root, or apt-get install dataset-fashion-mnist)"
    if os.environ.get("BYOL_REQUIRE_REAL_DATA") == "1":
        pytest.fail(f"{message}; BYOL_REQUIRE_REAL_DATA=1 requires it", pytrace=False)
    pytest.skip(message)

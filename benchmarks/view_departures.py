"""Two view ops against the paper's reference code (issue 24; RESULTS.md section 16).

The reference (DeepMind's BYOL code, ``byol/utils/augmentations.py``) adjusts saturation in HSV, as
``tf.image.adjust_saturation`` does (RGB -> HSV, S * factor clipped to [0, 1], back to RGB), and blurs with a
depthwise convolution with ``'SAME'`` padding, i.e. zeros outside the image. byol's defaults blend with the
grayscale image (torchvision's saturation) and pad the blur by reflection. This script re-implements the
reference behaviour in NumPy (float64, independently of ``byol.augment.ops``), applies it and byol's ops side
by side to real images at the parameters the views draw, and prints the differences as a Markdown table,
in 1/255 units; byol's ``saturation_mode: hsv`` and ``blur_padding: zeros`` are rows too (they should match
the reference to float rounding). Hue is checked the same way against the reference's HSV rotation.

    nice -n 19 .venv/bin/python benchmarks/view_departures.py --data CIFAR10.zip --size 32 --n 5000 \\
        --data PHOTOS.zip --size 96 --n 1000

``--data`` / ``--size`` / ``--n`` repeat, one triple per data set (an image folder or zip with a test split,
decoded at ``--size`` px through byol's loader). One thread; about a minute for the two above.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from byol.augment import ops
from byol.augment.spec import blur_kernel_size

_BINS = np.arange(25601) / 100.0  # |difference| in 1/255 units: histogram bins for the percentiles


# --------------------------------------------------------------------------- the reference, in NumPy
def ref_rgb_to_hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in turns [0, 1), saturation, value of ``[N, 3, H, W]`` RGB, as TensorFlow's kernel converts:
    v = max, s = (max - min) / v (0 where v = 0), the hue sector from the first channel equal to the max."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.max(axis=1)
    rng = v - x.min(axis=1)
    s = np.where(v > 0, rng / np.where(v > 0, v, 1.0), 0.0)
    norm = np.where(rng > 0, 1.0 / (6.0 * np.where(rng > 0, rng, 1.0)), 0.0)
    h = np.where(r == v, norm * (g - b), np.where(g == v, norm * (b - r) + 2.0 / 6.0, norm * (r - g) + 4.0 / 6.0))
    h = np.where(h < 0, h + 1.0, h)
    return h, s, v


def ref_hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ref_rgb_to_hsv`: chroma c = s v, the sector of 6 h picks (c, x, 0) per channel."""
    c = s * v
    m = v - c
    dh = (h % 1.0) * 6.0
    x = c * (1.0 - np.abs(dh % 2.0 - 1.0))
    sector = np.floor(dh).astype(np.int64)
    z = np.zeros_like(c)
    pick = [(c, x, z), (x, c, z), (z, c, x), (z, x, c), (x, z, c), (c, z, x)]
    out = [np.select([sector == k for k in range(6)], [p[ch] for p in pick], default=z) + m for ch in range(3)]
    return np.stack(out, axis=1)


def ref_saturation(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """The reference's saturation: S * factor (per image), clipped to [0, 1] in HSV, then the op's clip."""
    h, s, v = ref_rgb_to_hsv(x)
    s = np.clip(s * factor.reshape(-1, 1, 1), 0.0, 1.0)
    return np.clip(ref_hsv_to_rgb(h, s, v), 0.0, 1.0)


def ref_hue(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The reference's hue: (h + delta) mod 1 in HSV (``tf.image.adjust_hue``), then the op's clip."""
    h, s, v = ref_rgb_to_hsv(x)
    return np.clip(ref_hsv_to_rgb((h + shift.reshape(-1, 1, 1)) % 1.0, s, v), 0.0, 1.0)


def ref_blur(x: np.ndarray, sigma: np.ndarray, kernel_size: int) -> np.ndarray:
    """The reference's blur: taps exp(-t^2 / 2 sigma^2) at t = -r..r (r = k // 2), normalised; a horizontal
    then a vertical pass, each a 'SAME' convolution, i.e. zeros outside the image."""
    r = kernel_size // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    taps = np.exp(-(t[None, :] ** 2) / (2.0 * sigma.reshape(-1, 1) ** 2))
    taps /= taps.sum(axis=1, keepdims=True)
    N, C, H, W = x.shape
    xp = np.zeros((N, C, H + 2 * r, W + 2 * r))
    xp[:, :, r : r + H, r : r + W] = x
    w = taps.reshape(N, 1, 1, -1)
    hor = sum(w[..., q : q + 1] * xp[:, :, :, q : q + W] for q in range(2 * r + 1))  # [N, C, H + 2r, W]
    return sum(w[..., q : q + 1] * hor[:, :, q : q + H, :] for q in range(2 * r + 1))


# --------------------------------------------------------------------------------------- statistics
class Diff:
    """Accumulates |ours - reference| (in 1/255 units) over chunks: mean, 99th percentile, share > 1."""

    def __init__(self) -> None:
        self.hist = np.zeros(len(_BINS) - 1, dtype=np.int64)
        self.total = 0.0
        self.count = 0
        self.max = 0.0
        self.effect = 0.0  # sum of |reference - input|: the size of the op itself, for scale

    def add(self, d: np.ndarray, effect: np.ndarray) -> None:
        self.effect += float(np.abs(effect).sum()) * 255.0
        a = np.abs(d).ravel() * 255.0
        self.hist += np.histogram(np.minimum(a, 255.999), bins=_BINS)[0]
        self.total += float(a.sum())
        self.count += a.size
        self.max = max(self.max, float(a.max()) if a.size else 0.0)

    def row(self) -> list[str]:
        cum = np.cumsum(self.hist)
        j = int(np.searchsorted(cum, 0.99 * self.count))
        p99 = f"{_BINS[j + 1]:.2f}" if j else "< 0.01"  # the top of the bin the 99th percentile falls in
        over = 1.0 - cum[int(np.searchsorted(_BINS, 1.0)) - 1] / max(self.count, 1)
        n = max(self.count, 1)
        return [f"{self.effect / n:.2f}", f"{self.total / n:.3f}", p99, f"{100 * over:.2f}%", f"{self.max:.3g}"]


def _ring(H: int, W: int, width: int) -> np.ndarray:
    """Mask of the pixels within ``width`` of the image's edge."""
    m = np.zeros((H, W), dtype=bool)
    m[:width], m[-width:], m[:, :width], m[:, -width:] = True, True, True, True
    return m


# ----------------------------------------------------------------------------------------- the runs
def _chunks(images: torch.Tensor, size: int):
    for i in range(0, images.shape[0], size):
        x = images[i : i + size].to(torch.float32) / 255.0
        yield x, x.double().numpy()


def _draw(kind: str, n: int, gen: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return gen.uniform(lo, hi, n) if kind == "uniform" else np.full(n, {"lo": lo, "hi": hi}[kind])


def colour_rows(name: str, images: torch.Tensor, chunk: int) -> list[list[str]]:
    """Saturation (factor ~U[0.8, 1.2], the paper's T at strength 0.2, and its ends) and hue (+-0.1 turns)."""
    rows = []
    cases = [("saturation", m, kind) for m in ("blend", "hsv") for kind in ("uniform", "lo", "hi")]
    cases += [("hue", None, kind) for kind in ("uniform", "lo", "hi")]
    for op, mode, kind in cases:
        gen, diff = np.random.default_rng(0), Diff()
        for x, xn in _chunks(images, chunk):
            if op == "saturation":
                f = _draw(kind, len(xn), gen, 0.8, 1.2)
                ours = ops.adjust_saturation(x, torch.from_numpy(f).float(), mode)
                ref = ref_saturation(xn, f)
                label = {"uniform": "U[0.8, 1.2]", "lo": "0.8", "hi": "1.2"}[kind]
            else:
                d = _draw(kind, len(xn), gen, -0.1, 0.1)
                ours = ops.adjust_hue(x, torch.from_numpy(d).float())
                ref = ref_hue(xn, d)
                label = {"uniform": "U[-0.1, 0.1]", "lo": "-0.1", "hi": "0.1"}[kind]
            diff.add(ours.double().numpy() - ref, ref - xn)
        what = f"saturation ({mode})" if op == "saturation" else "hue (HSV rotation)"
        rows.append([name, what, label, *diff.row()])
    return rows


def blur_rows(name: str, images: torch.Tensor, chunk: int) -> list[list[str]]:
    """Blur at the views' sigma ~U[0.1, 2] and its ends; the differences split into border ring and interior."""
    S = images.shape[-1]
    k = blur_kernel_size(S, 0.1)
    ring, edge = _ring(S, S, k // 2), _ring(S, S, 1)
    rows = []
    for padding in ("reflect", "zeros"):
        for kind in ("uniform", "lo", "hi"):
            gen, diff, inner = np.random.default_rng(0), Diff(), 0.0
            ring_abs, ring_n, edge_ref, edge_ours = 0.0, 0, 0.0, 0.0
            for x, xn in _chunks(images, chunk):
                s = _draw(kind, len(xn), gen, 0.1, 2.0)
                ours = ops.gaussian_blur(x, torch.from_numpy(s).float(), k, padding).double().numpy()
                ref = ref_blur(xn, s, k)
                d = ours - ref
                diff.add(d, ref - xn)
                inner = max(inner, float(np.abs(d[..., ~ring]).max()) * 255.0)
                ring_abs += float(np.abs(d[..., ring]).sum()) * 255.0
                ring_n += int(d[..., ring].size)
                edge_ref += float(ref[..., edge].sum())
                edge_ours += float(ours[..., edge].sum())
            label = {"uniform": "U[0.1, 2.0]", "lo": "0.1", "hi": "2.0"}[kind]
            darker = round(100.0 * (1.0 - edge_ref / max(edge_ours, 1e-12)), 1) + 0.0  # no "-0.0"
            border = (f"ring {k // 2} px: mean {ring_abs / max(ring_n, 1):.2f}; edge {darker:.1f}% darker; "
                      f"inside max {inner:.4f}")
            rows.append([name, f"blur {k} taps ({padding})", label, *diff.row(), border])
    return rows


def _table(rows: list[list[str]], blur: bool) -> str:
    head = ["data", "op (ours)", "parameter", "op's effect", "mean", "p99", ">= 1/255", "max"]
    head += ["where (blur)"] if blur else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, help="image folder or zip with a test split")
    ap.add_argument("--size", action="append", type=int, help="decode at this size (one per --data; default 32)")
    ap.add_argument("--n", action="append", type=int, help="images used (one per --data; default 5000)")
    ap.add_argument("--chunk", type=int, default=250)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from byol.data import load_images

    sizes = a.size or [32] * len(a.data)
    counts = a.n or [5000] * len(a.data)
    colour, blur = [], []
    for path, size, n in zip(a.data, sizes, counts):
        s = load_images(path, "test", image_size=size, workers=1, progress=False)
        images = s.images[:n]
        name = f"{s.name} {size} px, {images.shape[0]} images"
        colour += colour_rows(name, images, a.chunk)
        blur += blur_rows(name, images, a.chunk)
    print("|ours - reference| in 1/255 units over every channel value: mean, 99th percentile, share >= 1/255, max;")
    print("op's effect: mean |reference - input|, the size of the augmentation itself.\n")
    print(_table(colour, blur=False))
    print()
    print(_table(blur, blur=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decoding image files with PIL into uint8 ``[C, H, W]`` arrays.

Conversion rules (the same for every file, so a data set is consistent):

* 16-bit and 32-bit integer images (modes ``I;16*``, ``I``) are read as the 16-bit range and scaled
  linearly to 8 bits with rounding: 65535 -> 255, 32768 -> 128 (never clipped to the low byte).
* Float images (mode ``F``) are scaled from [0, 1] when their maximum is at most 1, from [0, 255] when at
  most 255, otherwise from the 16-bit range.
* Transparency (RGBA, LA, palette with transparency) is composited on black: a fully transparent pixel
  becomes black whatever colour it hid, which keeps invisible pixels from leaking into training.
* One channel is the ITU-R 601-2 luma of colour images; three channels replicate a grey image.
* EXIF orientation is applied, so phone photos are upright.
* With ``image_size``, the shorter side is resized to ``image_size`` (bicubic, antialiased) and the
  centre square is cropped; large JPEGs are decoded at reduced scale first (PIL draft mode).
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


class UnreadableImage(Exception):
    """A file PIL cannot decode (corrupt, truncated, not an image)."""


@dataclass(frozen=True)
class Probe:
    """What a header read tells us about a file without decoding its pixels."""

    grey: bool
    size: tuple[int, int]  # (height, width) after EXIF orientation


def _open(data: bytes) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises several types for bad files
        raise UnreadableImage(str(exc)) from exc
    return im


def _palette_is_grey(im: Image.Image) -> bool:
    palette = im.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def probe(data: bytes) -> Probe:
    """Read only the header of an encoded image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns on odd headers; unreadable files are handled later
        im = _open(data)
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        w, h = h, w
    grey = im.mode in _GREY_MODES or (im.mode in ("P", "PA") and _palette_is_grey(im))
    return Probe(grey=grey, size=(h, w))


def summarize_probes(probes: Sequence[Probe]) -> tuple[int, tuple[int, int] | None]:
    """(channels, most common (H, W)) from a sample of probes: 1 channel only if all are grey."""
    if not probes:
        return 3, None
    channels = 1 if all(p.grey for p in probes) else 3
    size = Counter(p.size for p in probes).most_common(1)[0][0]
    return channels, size


def _wide_to_l(im: Image.Image) -> Image.Image:
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        top = float(arr.max()) if arr.size else 0.0
        scale = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    else:
        scale = 65535.0
    out = np.rint(np.clip(arr, 0.0, scale) * (255.0 / scale)).astype(np.uint8)
    return Image.fromarray(out)


def _composite_on_black(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """An 8-bit ``L`` (channels=1) or ``RGB`` (channels=3) image."""
    if im.mode in _WIDE_MODES:
        im = _wide_to_l(im)
    elif im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = _composite_on_black(im)
    target = "L" if channels == 1 else "RGB"
    if im.mode != target:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, P, 1, ...
        im = im.convert(target)
    return im


def _resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode_image(data: bytes, channels: int, image_size: int | None) -> np.ndarray:
    """Decode one encoded image to uint8 ``[channels, H, W]`` (see the module docstring for the rules)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = _open(data)
        try:
            if image_size is not None and im.format == "JPEG":
                im.draft(im.mode, (image_size, image_size))  # decode at 1/2, 1/4 or 1/8 scale when possible
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_mode(im, channels)
            if image_size is not None:
                im = _resize_center_crop(im, image_size)
            arr = np.asarray(im)
        except UnreadableImage:
            raise
        except Exception as exc:  # truncated data, bad codec state, decompression bombs, ...
            raise UnreadableImage(str(exc)) from exc
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


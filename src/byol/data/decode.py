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
  centre square is cropped; large JPEGs are decoded at reduced scale first (PIL draft mode). A smaller
  image is upscaled the same way.
* An image with more than :data:`MAX_PIXELS` pixels to decode (after JPEG draft reduction) is refused as a
  possible decompression bomb (PIL's own limit, but enforced instead of warned about).

:func:`decode_noted` also says which of these conversions a file needed (counted in a folder's report).
:func:`decode_crops` applies the same rules but returns regions of the whole image (the streaming path's
random crops) instead of the centre square; it refuses a bomb on its full size, before any reduction.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


#: Pixels above which an image is refused as a possible decompression bomb (PIL's limit: about 89 MP).
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

#: Why a file was skipped (the reasons counted in a folder's report).
EMPTY, NOT_IMAGE, TRUNCATED, TOO_LARGE = "empty file", "not an image", "truncated", "too large (decompression bomb?)"


@dataclass
class DecodeReport:
    """What decoding a list of files found: the failed positions with a reason, and the conversions."""

    failed: dict[int, str] = field(default_factory=dict)  #: position -> reason (byol.data.decode reasons)
    converted: Counter[str] = field(default_factory=Counter)  #: conversion -> number of files

    def add(self, start: int, part: DecodeReport) -> None:
        self.failed.update({start + i: why for i, why in part.failed.items()})
        self.converted.update(part.converted)


class UnreadableImage(Exception):
    """A file PIL cannot decode; ``reason`` is one of the short reasons above."""

    def __init__(self, detail: str, reason: str = NOT_IMAGE) -> None:
        super().__init__(detail)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, Image.DecompressionBombError) or "decompression bomb" in text:
        return TOO_LARGE
    if "truncated" in text or "broken data stream" in text or isinstance(exc, (EOFError, SyntaxError)):
        return TRUNCATED
    return NOT_IMAGE


@dataclass(frozen=True)
class Probe:
    """What a header read tells us about a file without decoding its pixels."""

    grey: bool
    size: tuple[int, int]  # (height, width) after EXIF orientation


def _open(data: bytes) -> Image.Image:
    if not data:
        raise UnreadableImage("the file is empty", EMPTY)
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises several types for bad files
        raise UnreadableImage(str(exc), _reason(exc)) from exc
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


def _conversion(im: Image.Image) -> str | None:
    """What :func:`_to_mode` will do to ``im`` beyond a plain grey/colour change, for the report."""
    if im.mode in _WIDE_MODES:
        return "16-bit or float to 8-bit"
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        return "transparency composited on black"
    if im.mode == "P":
        return "palette to RGB"
    if im.mode == "CMYK":
        return "CMYK to RGB"
    if im.mode not in ("1", "L", "RGB"):
        return f"{im.mode} to RGB"
    return None


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
    return decode_noted(data, channels, image_size)[0]


def decode_noted(data: bytes, channels: int, image_size: int | None) -> tuple[np.ndarray, list[str]]:
    """:func:`decode_image` and the conversions the file needed (e.g. ``"CMYK to RGB"``, ``"upscaled"``)."""
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = _open(data)
        try:
            if image_size is not None and im.format == "JPEG":
                im.draft(im.mode, (image_size, image_size))  # decode at 1/2, 1/4 or 1/8 scale when possible
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise UnreadableImage(f"{im.size[0]}x{im.size[1]} pixels is over {MAX_PIXELS}", TOO_LARGE)
            im.load()
            im = ImageOps.exif_transpose(im)
            note = _conversion(im)
            if note:
                notes.append(note)
            im = _to_mode(im, channels)
            if image_size is not None:
                if min(im.size) < image_size:
                    notes.append(f"upscaled (smaller than {image_size} px)")
                im = _resize_center_crop(im, image_size)
            arr = np.asarray(im)
        except UnreadableImage:
            raise
        except Exception as exc:  # truncated data, bad codec state, decompression bombs, ...
            raise UnreadableImage(str(exc), _reason(exc)) from exc
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), notes


#: A crop ``(x0, y0, w, h)`` in whole pixels of the upright (EXIF-oriented), full-resolution image.
Box = tuple[int, int, int, int]

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


def draft_scale(boxes: Sequence[Box], size: int) -> int:
    """The JPEG reduction (1, 2, 4 or 8) to decode at for ``boxes`` resized to ``size`` px: the largest
    whose reduced image still holds every crop with at least ``size`` pixels a side, so the reduction never
    costs resolution that the output would have kept (a crop smaller than ``size`` is decoded in full)."""
    smallest = min(min(w, h) for _, _, w, h in boxes)
    for scale in (8, 4, 2):
        if smallest >= scale * size:
            return scale
    return 1


@dataclass
class Crops:
    """What :func:`decode_crops` made of one file."""

    arrays: list[np.ndarray]  #: uint8 ``[H, W, C]`` (``[H, W]`` for one channel) per box, ``size x size``
    notes: list[str]  #: conversions the file needed (the same notes as :func:`decode_noted`)
    scale: int  #: the JPEG draft reduction the file was decoded at (1: full size)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: the image itself may still be fine
        return 1


def decode_crops(
    data: bytes, channels: int, size: int, boxes_for: Callable[[int, int], Sequence[Box]], *,
    resample: Sequence[str] = ("bilinear",), draft: bool = True,
) -> Crops:
    """Regions of one encoded image, each resized to ``size x size``, decoding no more than they need.

    ``boxes_for(width, height)`` gets the upright full-resolution size (read from the header, EXIF
    orientation applied) and returns the crops. A JPEG is then decoded at the reduction of
    :func:`draft_scale` (libjpeg's DCT scaling: large photos decode several times faster), and each box is
    resized from the reduced image (PIL ``resize`` with a sub-pixel box, antialiased when shrinking) with
    ``resample[i]`` (the last entry for any further box). Conversion rules as :func:`decode_noted`; raises
    :class:`UnreadableImage` with a reason.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = _open(data)
        try:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise UnreadableImage(f"{width}x{height} pixels is over {MAX_PIXELS}", TOO_LARGE)
            orientation = _orientation(im)
            upright = (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)
            boxes = boxes_for(*upright)
            scale = draft_scale(boxes, size) if draft and im.format == "JPEG" else 1
            factor = 1.0
            if scale > 1:
                got = im.draft(im.mode, (width // scale, height // scale))
                factor = got[1][2] / width if got is not None else 1.0  # reduced pixels per full pixel
            im.load()
            if orientation != 1:
                im = ImageOps.exif_transpose(im)
            note = _conversion(im)
            im = _to_mode(im, channels)
            arrays = []
            for i, (x, y, w, h) in enumerate(boxes):
                filt = _RESAMPLE[resample[min(i, len(resample) - 1)]]
                region = (x * factor, y * factor, (x + w) * factor, (y + h) * factor)
                arrays.append(np.asarray(im.resize((size, size), filt, box=region)))
        except UnreadableImage:
            raise
        except Exception as exc:  # truncated data, bad codec state, ...
            raise UnreadableImage(str(exc), _reason(exc)) from exc
    return Crops(arrays, [note] if note else [], round(1.0 / factor))

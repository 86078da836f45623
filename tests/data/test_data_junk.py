"""A folder holding every kind of bad file a user's folder holds: each is skipped or converted, counted by
reason and reported once in one line, and the good images load."""

from __future__ import annotations

import warnings

import numpy as np

from byol.data import SkippedImagesWarning, load_images
from byol.data.folder import printable


def test_every_bad_kind_is_skipped_or_converted_and_counted(junk_folder, tmp_path) -> None:
    root, expect = junk_folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_images(str(root), image_size=16, cache_dir=tmp_path / "cache", progress=False)
    assert len(ds) == expect["used"] and ds.num_channels == 3 and ds.classes == ["a", "b"]
    assert ds.skip_reasons == expect["skipped"] and sorted(ds.skipped) == sorted(expect["skipped"])
    assert ds.converted == expect["converted"]
    (line,) = [str(w.message) for w in caught if issubclass(w.category, SkippedImagesWarning)]
    assert "\n" not in line and f": {expect['used']} images; skipped {len(expect['skipped'])} file(s) (" in line
    assert "2 too large (decompression bomb?)" in line and "1 broken symlink" in line and "2 empty file" in line
    assert printable(next(f for f in ds.skipped if f.endswith(".jpg") and f.startswith("b/\udcff"))) == "b/\\xff\\xfe.jpg"
    assert "converted 5 (" in line and "1 CMYK to RGB" in line
    line.encode("utf-8")  # printable: the non-UTF-8 name is escaped, not a lone surrogate
    # The good images are the pixels that were saved; the Latin-1 name kept its bytes.
    assert any(p.encode("utf-8", "surrogateescape") == b"b/caf\xe9.png" for p in ds.paths or [])
    alpha = ds.paths.index("b/alpha.png")  # type: ignore[union-attr]
    assert ds.images[alpha].dtype.is_floating_point is False and int(ds.images[alpha].max()) > 0

    # The second load reads the cache and reports the same, without decoding again.
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        cached = load_images(str(root), image_size=16, cache_dir=tmp_path / "cache", progress=False)
    assert [str(w.message) for w in again if issubclass(w.category, SkippedImagesWarning)] == [line]
    assert cached.skip_reasons == ds.skip_reasons and np.array_equal(cached.images.numpy(), ds.images.numpy())

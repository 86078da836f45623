"""The streaming data path: crops of the whole image, reduced JPEG decoding, reproducible per (seed, epoch,
index), sharding, bad files, and when it is chosen."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.config import DataConfig
from byol.train.config import PretrainConfig, build_config
from byol.data import load_images
from byol.data.archive import open_store
from byol.data.decode import decode_crops, draft_scale
from byol.data.layout import discover
from byol.data.stream import STREAM_AUTO_BYTES, StreamDataset, crop_rng, open_stream, wants_stream
from byol.data.streamloader import StreamLoader
from byol.errors import ConfigError
from byol.config.views import paper_views

RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


def _dataset(root: Path, size: int = 16, seed: int = 0, channels: int = 3) -> StreamDataset:
    files = discover(open_store(root).list_files(), "train", str(root)).files
    return StreamDataset(root, files, channels=channels, size=size, specs=paper_views(), seed=seed)


@pytest.fixture
def wide_folder(tmp_path: Path) -> Path:
    """Four 240x60 images: red left edge, blue right edge (40 px each), grey between."""
    root = tmp_path / "wide"
    root.mkdir()
    pixels = np.full((60, 240, 3), GREY, dtype=np.uint8)
    pixels[:, :40], pixels[:, -40:] = RED, BLUE
    for i in range(4):
        Image.fromarray(pixels).save(root / f"{i}.png")
    return root


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """24 smooth 400x300 JPEGs (gradients and low-frequency waves: what draft decoding keeps) in 2 classes,
    plus one file that is not an image."""
    root = tmp_path / "photos"
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    for i in range(24):
        phase = i * 0.7
        img = np.stack([127 + 100 * np.sin(xx / (37 + i) + phase), 127 + 100 * np.cos(yy / 29 - phase),
                        255 * (xx + yy) / 700], axis=-1)
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"c{i % 2}" / f"{i:02d}.jpg", quality=90)
    (root / "c1" / "05.jpg").write_bytes(b"not a jpeg")  # replaces image 5
    return root


def test_crops_come_from_the_whole_image(wide_folder):
    # The cache's centre square never shows the edges; streamed crops do, on both sides.
    cached = load_images(str(wide_folder), image_size=16, progress=False).images.float()
    assert (cached[:, 0] > 200).sum() == 0 and (cached[:, 2] > 200).sum() == 0
    ds = _dataset(wide_folder)
    seen_red = seen_blue = 0
    for epoch in range(25):
        for index in range(len(ds)):
            for crop in ds.views(epoch, index)[0]:
                c = crop.astype(np.float32)
                seen_red += bool(((c[..., 0] > 200) & (c[..., 2] < 50)).any())
                seen_blue += bool(((c[..., 2] > 200) & (c[..., 0] < 50)).any())
    assert seen_red > 10 and seen_blue > 10  # of 200 crops; about a third see each edge


def test_draft_scale_keeps_the_output_resolution():
    assert draft_scale([(0, 0, 127, 300), (0, 0, 400, 400)], 64) == 1  # one crop is below 2 x 64
    assert draft_scale([(0, 0, 128, 300), (5, 5, 300, 260)], 64) == 2
    assert draft_scale([(0, 0, 300, 300)], 64) == 4
    assert draft_scale([(0, 0, 600, 512)], 64) == 8


def test_draft_decoding_is_close_to_full_decoding(photo_folder):
    data = (photo_folder / "c1" / "03.jpg").read_bytes()
    boxes = [(10, 20, 300, 260), (150, 40, 160, 140)]
    fast = decode_crops(data, 3, 64, lambda w, h: boxes)
    full = decode_crops(data, 3, 64, lambda w, h: boxes, draft=False)
    assert (fast.scale, full.scale) == (2, 1)
    for a, b in zip(fast.arrays, full.arrays):
        assert a.shape == b.shape == (64, 64, 3)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4  # measured: 0.2-0.35 and 1


def test_same_key_same_views_other_epoch_or_seed_differs(photo_folder):
    ds = _dataset(photo_folder, size=24)
    a, b = ds.views(3, 7)[0], ds.views(3, 7)[0]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])  # the two views are two crops
    assert not np.array_equal(a[0], ds.views(4, 7)[0][0])
    assert not np.array_equal(a[0], _dataset(photo_folder, size=24, seed=1).views(3, 7)[0][0])


def test_crop_streams_of_neighbouring_seeds_epochs_and_indices_are_unrelated():
    """The crops' seed packs (seed, epoch, index) into separate bit fields, not a sum: seed s+1 does not
    replay seed s one epoch (or one index) later, as the epoch order's ``seed + epoch`` once did."""
    keys = [(s, e, i) for s in (0, 1, 2) for e in (0, 1, 2) for i in (0, 1, 2)]
    draws = {k: tuple(crop_rng(*k).random() for _ in range(4)) for k in keys}
    assert len(set(draws.values())) == len(keys)


def test_batches_do_not_depend_on_workers_and_resume_mid_epoch(photo_folder):
    ds = _dataset(photo_folder, size=16)
    in_process, one_worker = StreamLoader(ds, workers=0), StreamLoader(_dataset(photo_folder, size=16), workers=1)
    try:
        a = list(in_process.epoch(2, 8, seed=5))
        b = list(one_worker.epoch(2, 8, seed=5))
        resumed = list(one_worker.epoch(2, 8, seed=5, start_step=1))
    finally:
        one_worker.close()
    assert len(a) == len(b) == 3 and len(resumed) == 2
    for x, y in zip(a, b):
        assert torch.equal(x.indices, y.indices) and torch.equal(x.crops1, y.crops1) and torch.equal(x.crops2, y.crops2)
    for x, y in zip(a[1:], resumed):
        assert torch.equal(x.crops1, y.crops1) and torch.equal(x.crops2, y.crops2)
    assert a[0].crops1.dtype == torch.uint8 and a[0].crops1.shape == (8, 3, 16, 16)


def test_an_abandoned_epoch_stops_the_workers(photo_folder):
    import multiprocessing

    loader = StreamLoader(_dataset(photo_folder, size=8), workers=1)
    batches = loader.epoch(0, 8, seed=0)
    next(batches)
    assert len(multiprocessing.active_children()) == 1
    del batches  # as when training ends mid-epoch
    assert multiprocessing.active_children() == []
    assert len(list(loader.epoch(1, 8, seed=0))) == 3  # the next epoch starts a worker again
    loader.close()
    assert multiprocessing.active_children() == []


def test_streaming_leaves_the_global_random_state_alone(photo_folder):
    loader = StreamLoader(_dataset(photo_folder, size=8), workers=0)
    before = torch.get_rng_state()
    list(loader.epoch(0, 8, seed=0)), list(loader.epoch(1, 8, seed=0))
    assert torch.equal(torch.get_rng_state(), before)


def test_two_ranks_partition_each_epoch(photo_folder):
    loader = StreamLoader(_dataset(photo_folder, size=8), workers=0)
    for epoch in (0, 1):
        ranks = [torch.cat([b.indices for b in loader.epoch(epoch, 8, seed=0, rank=r, world_size=2)]) for r in (0, 1)]
        alone = torch.cat([b.indices for b in loader.epoch(epoch, 8, seed=0)])
        assert len(ranks[0]) == len(ranks[1]) == 12  # 3 batches of 8, half each
        assert not set(ranks[0].tolist()) & set(ranks[1].tolist())
        assert sorted(ranks[0].tolist() + ranks[1].tolist()) == sorted(alone.tolist())
    assert not torch.equal(torch.cat([b.indices for b in loader.epoch(0, 8, seed=0)]), alone)  # epochs reshuffle


def test_a_bad_file_is_replaced_and_reported_once(photo_folder):
    ds = _dataset(photo_folder, size=16)
    bad = ds.files.index("c1/05.jpg")
    sample = ds.views(0, bad, taken={bad + 1})
    assert sample.failed == [(bad, "not an image")] and sample.file not in (bad, bad + 1)
    own = ds.views(0, sample.file)  # the replacement's crops come from the bad index's stream, not its own
    assert sample.arrays[0].shape == own.arrays[0].shape and not np.array_equal(sample.arrays[0], own.arrays[0])
    reports = []
    loader = StreamLoader(ds, workers=0, report=lambda skipped, reasons: reports.append(dict(reasons)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(loader.epoch(0, 8, seed=0))
        list(loader.epoch(1, 8, seed=0))  # every file again: nothing new to report
    assert [str(w.message) for w in caught] == [
        f"{ds.root}: 23 images; skipped 1 file(s) (1 not an image): c1/05.jpg (found while streaming)"]
    assert reports == [{"c1/05.jpg": "not an image"}] and loader.skipped == ["c1/05.jpg"]


def test_a_replaced_file_never_repeats_an_image_of_its_batch(tmp_path):
    """An unreadable file's row is filled by a seeded draw of an image not otherwise in the batch: never by
    the next index's file, which may be in the batch already (one image twice: a false negative for
    SimCLR/MoCo). Each image is one flat colour, so a row's colour names the file it came from."""
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(10):
        Image.fromarray(np.full((32, 32, 3), (20 * i + 10, 0, 0), dtype=np.uint8)).save(root / f"{i:02d}.png")
    (root / "04b.png").write_bytes(b"not a png")  # index 5, before 05.png
    ds = _dataset(root, size=8)
    bad = ds.files.index("04b.png")
    assert ds.files[bad + 1] == "05.png"
    loader = StreamLoader(ds, workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seen_bad = 0
        for epoch in range(8):
            for batch in loader.epoch(epoch, 8, seed=0):
                colours = batch.crops1[:, 0, 0, 0].tolist()
                assert len(batch.indices) == 8 and len(set(colours)) == 8, (epoch, colours)
                assert torch.equal(batch.crops1[:, 0, 0, 0], batch.crops2[:, 0, 0, 0])  # both views of one file
                seen_bad += bad in batch.indices.tolist()
    assert seen_bad >= 4
    again = [b.crops1 for b in StreamLoader(_dataset(root, size=8), workers=0).epoch(3, 8, seed=0)]
    assert all(torch.equal(x, y) for x, y in zip(again, [b.crops1 for b in loader.epoch(3, 8, seed=0)]))


def test_grey_and_converted_files(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    Image.fromarray(np.full((40, 50), 90, dtype=np.uint8)).save(root / "grey.png")
    Image.fromarray(np.full((40, 50, 3), 200, dtype=np.uint8)).convert("CMYK").save(root / "cmyk.jpg")
    ds = _dataset(root, size=8, channels=1)
    batch = ds.__getitems__([(0, 0), (0, 1)])
    assert batch.crops1.shape == (2, 1, 8, 8)
    assert [ds.files[j] for j, note in batch.notes] == ["cmyk.jpg"] and batch.notes[0][1] == "CMYK to RGB"


def test_when_the_stream_is_chosen(photo_folder):
    assert not wants_stream("auto", num_files=50_000, channels=3, image_size=32)  # CIFAR-sized: the cache
    assert not wants_stream("auto", num_files=24_335, channels=3, image_size=96)  # intel-scenes: the cache
    assert wants_stream("auto", num_files=1_281_167, channels=3, image_size=224)  # ImageNet: ~193 GB
    assert not wants_stream("auto", num_files=10**9, channels=3, image_size=None)  # native size: the cache
    assert wants_stream("on", num_files=1, channels=1, image_size=None) and not wants_stream(
        "off", num_files=10**9, channels=3, image_size=224)
    assert 50_000 * 3 * 32 * 32 < STREAM_AUTO_BYTES
    specs = paper_views()
    assert open_stream(DataConfig(source=str(photo_folder), image_size=32), specs, seed=0) is None
    on = open_stream(DataConfig(source=str(photo_folder), stream="on", image_size=32, view_size=16), specs, seed=0,
                     progress=False)
    assert on is not None and len(on) == 24 and on.dataset.size == 16 and on.sample.image_size == 32
    assert len(on.sample) == 23 and on.sample.skipped == ["c1/05.jpg"] and on.sample.classes == ["c0", "c1"]
    limited = open_stream(DataConfig(source=str(photo_folder), stream="on", limit=10), specs, seed=0, progress=False)
    assert limited is not None and len(limited) == 10 and limited.dataset.size == 300  # the photos' shorter side
    with pytest.raises(ConfigError, match="named data set"):
        open_stream(DataConfig(source="cifar10", stream="on", image_size=32), specs, seed=0)


def test_config_key():
    assert PretrainConfig().data.stream == "auto"
    for raw, value in (("on", "on"), ("off", "off"), ("auto", "auto"), ("true", "on")):
        assert build_config(overrides=[f"data.stream={raw}"]).data.stream == value
    with pytest.raises(ConfigError, match="data.stream must be one of auto, on, off"):
        build_config(overrides=["data.stream=always"])
    with pytest.raises(ConfigError, match="data.workers"):
        build_config(overrides=["data.workers=-1"])


def test_a_zip_streams_in_worker_processes(photo_folder, tmp_path):
    import zipfile

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(photo_folder.rglob("*.jpg")):
            zf.write(f, f.relative_to(photo_folder).as_posix())
    from_dir, from_zip = _dataset(photo_folder, size=8), _dataset(archive, size=8)
    loader = StreamLoader(from_zip, workers=2)
    try:
        zipped = list(loader.epoch(0, 8, seed=0))
    finally:
        loader.close()
    plain = list(StreamLoader(from_dir, workers=0).epoch(0, 8, seed=0))
    assert len(zipped) == 3 and all(torch.equal(a.crops1, b.crops1) for a, b in zip(zipped, plain))

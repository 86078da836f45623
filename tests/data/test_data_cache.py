"""The decode-once cache: hits, invalidation, atomic writes, and the worker-process decode path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.data import decode, load_images, workers
from byol.data.cache import MAX_CACHED_SIZE


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts in-process calls of the single-image decoder."""
    calls: list[int] = []
    real = decode.decode_noted

    def counting(data: bytes, channels: int, image_size: int | None) -> tuple[np.ndarray, list[str]]:
        calls.append(1)
        return real(data, channels, image_size)

    monkeypatch.setattr(decode, "decode_noted", counting)
    return calls


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "images").iterdir()) if (cache / "images").exists() else []


def test_second_load_hits_the_cache(tmp_path: Path, labeled_folder, decode_calls: list[int]) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    first = load_images(str(root), cache_dir=cache, progress=False)
    assert len(decode_calls) == 6
    second = load_images(str(root), cache_dir=cache, progress=False)
    assert len(decode_calls) == 6  # nothing decoded again
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)  # type: ignore[arg-type]
    assert second.paths == first.paths and second.classes == first.classes
    (entry,) = _entries(cache)
    assert {p.name for p in entry.iterdir()} == {"images.npy", "labels.npy", "meta.json"}
    assert np.load(entry / "images.npy", mmap_mode="r").shape == (6, 3, 4, 4)
    # the default location honours $BYOL_CACHE_DIR (set per test by conftest)
    load_images(str(root), progress=False)
    assert len(_entries(Path(os.environ["BYOL_CACHE_DIR"]))) == 1


def test_cached_tensor_is_copy_on_write(tmp_path: Path, labeled_folder) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    load_images(str(root), cache_dir=cache, progress=False)
    ds = load_images(str(root), cache_dir=cache, progress=False)
    original = ds.images[0].clone()
    ds.images[0] = 0  # must neither crash (read-only mapping) nor reach the file
    again = load_images(str(root), cache_dir=cache, progress=False)
    assert torch.equal(again.images[0], original)


def test_changed_source_is_decoded_again(tmp_path: Path, labeled_folder, rgb_pixels, decode_calls: list[int]) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    load_images(str(root), cache_dir=cache, progress=False)
    assert len(decode_calls) == 6

    changed = rgb_pixels(99)
    target = root / "cat" / "1.png"
    Image.fromarray(changed).save(target)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))  # a different mtime even on coarse clocks
    ds = load_images(str(root), cache_dir=cache, progress=False)
    assert len(decode_calls) == 12
    assert np.array_equal(ds.images[ds.paths.index("cat/1.png")].numpy(), changed.transpose(2, 0, 1))  # type: ignore[union-attr]

    Image.fromarray(rgb_pixels(100)).save(root / "dog" / "new.png")
    ds = load_images(str(root), cache_dir=cache, progress=False)
    assert len(ds) == 7 and len(decode_calls) == 19
    assert len(_entries(cache)) == 3  # old entries stay; each source state has its own key


def test_options_have_their_own_entries(tmp_path: Path, labeled_folder, decode_calls: list[int]) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    load_images(str(root), cache_dir=cache, progress=False)
    small = load_images(str(root), cache_dir=cache, image_size=2, progress=False)
    grey = load_images(str(root), cache_dir=cache, channels=1, progress=False)
    assert small.images.shape == (6, 3, 2, 2) and grey.images.shape == (6, 1, 4, 4)
    assert len(_entries(cache)) == 3 and len(decode_calls) == 18


def test_large_images_are_not_cached(tmp_path: Path, labeled_folder) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    ds = load_images(str(root), cache_dir=cache, image_size=MAX_CACHED_SIZE + 1, progress=False)
    assert ds.images.shape == (6, 3, MAX_CACHED_SIZE + 1, MAX_CACHED_SIZE + 1)
    assert _entries(cache) == []


def test_an_interrupted_decode_leaves_no_entry_and_resumes_without_redoing_chunks(
    tmp_path: Path, labeled_folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    fresh = load_images(str(root), cache_dir=tmp_path / "other-cache", progress=False)
    monkeypatch.setattr(workers, "_CHUNK_FILES", (2, 2))  # 3 chunks of 2 files
    real = decode.decode_noted
    calls: list[int] = []

    def dies_on_fifth(data: bytes, channels: int, image_size: int | None) -> tuple[np.ndarray, list[str]]:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(data, channels, image_size)

    monkeypatch.setattr(decode, "decode_noted", dies_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        load_images(str(root), cache_dir=cache, progress=False)
    (partial,) = _entries(cache)  # no complete entry: only the partial build, with 2 chunks journaled
    assert partial.name.startswith(".partial-") and len((partial / "progress.jsonl").read_text().splitlines()) == 2

    calls.clear()
    ds = load_images(str(root), cache_dir=cache, progress=False)
    assert len(calls) == 2  # only the unfinished chunk was decoded again
    assert [p.name.startswith(".") for p in _entries(cache)] == [False]
    assert torch.equal(ds.images, fresh.images) and ds.paths == fresh.paths


def test_a_partial_build_of_a_live_process_is_left_alone(tmp_path: Path, labeled_folder) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    load_images(str(root), cache_dir=cache, progress=False)
    (entry,) = _entries(cache)
    partial = cache / "images" / f".partial-{entry.name}"
    shutil.rmtree(entry)
    partial.mkdir()
    (partial / "owner.pid").write_text(str(os.getppid()))  # a live process is building it
    ds = load_images(str(root), cache_dir=cache, progress=False)
    assert len(ds) == 6 and (partial / "owner.pid").read_text() == str(os.getppid())


def test_stale_temporary_directory_of_dead_process_is_removed(tmp_path: Path, labeled_folder) -> None:
    root, _ = labeled_folder
    cache = tmp_path / "cache"
    load_images(str(root), cache_dir=cache, progress=False)
    (entry,) = _entries(cache)
    entry.rename(cache / "images" / f".tmp-{entry.name}-4194999-deadbeef")  # as if killed while writing
    load_images(str(root), cache_dir=cache, progress=False)
    assert [p.name for p in _entries(cache)] == [entry.name]


def test_corrupt_entry_is_rebuilt(tmp_path: Path, labeled_folder) -> None:
    root, expected = labeled_folder
    cache = tmp_path / "cache"
    load_images(str(root), cache_dir=cache, progress=False)
    (entry,) = _entries(cache)
    (entry / "meta.json").write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring unreadable cache entry"):
        ds = load_images(str(root), cache_dir=cache, progress=False)
    assert len(ds) == 6


def test_skipped_files_are_remembered_by_the_cache(tmp_path: Path, labeled_folder) -> None:
    root, _ = labeled_folder
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="skipped 1"):
        load_images(str(root), cache_dir=cache, progress=False)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = load_images(str(root), cache_dir=cache, progress=False)
    assert ds.skipped == ["cat/broken.jpg"] and len(ds) == 6


@pytest.mark.parametrize("as_zip", [False, True])
def test_worker_processes_decode_the_same_pixels(
    tmp_path: Path, labeled_folder, zip_dir, monkeypatch: pytest.MonkeyPatch, decode_calls: list[int], as_zip: bool
) -> None:
    root, expected = labeled_folder
    (root / "cat" / "broken.jpg").write_bytes(os.urandom(64))
    source = zip_dir(root, tmp_path / "pets.zip") if as_zip else root
    monkeypatch.setattr(workers, "POOL_MIN_FILES", 0)
    monkeypatch.setattr(workers, "_CHUNK_FILES", (2, 2))  # several tasks, completing in any order
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = load_images(str(source), cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert decode_calls == []  # all decoding happened in the worker processes
    assert ds.skipped == ["cat/broken.jpg"] and len(ds) == 6
    for i, rel in enumerate(ds.paths or []):
        assert np.array_equal(ds.images[i].numpy(), expected[rel]), rel


def test_unwritable_cache_falls_back_to_memory(tmp_path: Path, labeled_folder) -> None:
    root, expected = labeled_folder
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache dir cannot be created below a file")
    with pytest.warns(UserWarning, match="cannot write the image cache"):
        ds = load_images(str(root), cache_dir=blocker / "cache", progress=False)
    assert len(ds) == 6
    for i, rel in enumerate(ds.paths or []):
        assert np.array_equal(ds.images[i].numpy(), expected[rel]), rel


def test_two_processes_building_one_entry_at_once_do_not_share_its_partial_directory(tmp_path: Path) -> None:
    """``byol reproduce --jobs 2`` starts two cells on one folder at once: the resumable build is claimed by
    one process only (the other builds privately), so neither removes the other's files mid-build."""
    from byol.data.cache import _claim

    partial = tmp_path / ".partial-entry"
    first = _claim(partial)
    assert first is not None and (partial / "owner.pid").read_text() == str(os.getpid())
    # another process asks while the first holds it: refused (flock is per open file description, so a
    # second claim from this process stands for it)
    assert _claim(partial) is None
    first.release()  # committed or interrupted: the next build may take it over
    again = _claim(partial)
    assert again is not None
    again.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial-entry"]  # no lock file left behind


def test_a_journal_entry_whose_images_file_was_cut_before_its_header_is_rebuilt(tmp_path: Path) -> None:
    from byol.data.cache import EntryWriter

    final = tmp_path / "images" / "e"
    with pytest.raises(KeyboardInterrupt), EntryWriter(final, resumable=True) as w:
        w.array((2, 1, 3, 3))
        (w.tmp / "images.npy").write_bytes(b"")  # as a kill right after the file was created leaves it
        raise KeyboardInterrupt  # interrupted: the partial build stays for the next one
    assert (final.parent / f".partial-{final.name}" / "images.npy").stat().st_size == 0
    with EntryWriter(final, resumable=True) as w:
        images = w.array((2, 1, 3, 3))  # not an EOFError: started afresh
        images[:] = 7
        w.commit(images, None, {"paths": ["a", "b"]})
    assert np.load(final / "images.npy").sum() == 7 * 18

"""Named torchvision data sets: clear errors when their files are absent (no network here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from byol.data import load_images
from byol.errors import DataError


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("CIFAR-100", "cifar-100-python"), ("stl10", "stl10_binary")])
def test_missing_files(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DataError) as err:
        load_images(name, data_dir=str(tmp_path))
    message = str(err.value)
    assert "not found" in message and folder in message and "--data-dir" in message and "--download" in message
    assert "\n" not in message


def test_default_root_is_under_the_cache(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "c" / "torchvision")):
        load_images("cifar10", cache_dir=tmp_path / "c")


@pytest.mark.parametrize("name, split", [("cifar10", "unlabeled"), ("stl10", "val"), ("cifar100", "validation")])
def test_unknown_splits(tmp_path: Path, name: str, split: str) -> None:
    with pytest.raises(DataError, match=f"not '{split}'"):
        load_images(name, split, data_dir=str(tmp_path))


def test_damaged_files_are_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()  # present but empty: torchvision's integrity check fails
    with pytest.raises(DataError, match="cannot load cifar10"):
        load_images("cifar10", data_dir=str(tmp_path))


def test_path_wins_when_written_as_a_path(tmp_path: Path, labeled_folder, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = labeled_folder
    named = root.rename(tmp_path / "cifar10")
    monkeypatch.chdir(tmp_path)
    ds = load_images("./cifar10", progress=False)
    assert ds.name == "cifar10" and len(ds) == 6 and ds.paths is not None
    assert named.is_dir()

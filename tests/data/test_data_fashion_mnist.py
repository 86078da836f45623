"""Fashion-MNIST through torchvision, on generated IDX files (and the real ones when installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from byol.data import DATASET_STATS, load_images
from byol.data import torchvision_sets
from byol.errors import DataError


@pytest.fixture(autouse=True)
def _no_system_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the machine's real Fashion-MNIST so the generated files are the only candidate."""
    monkeypatch.setattr(torchvision_sets, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "no-system-copy")


@pytest.mark.parametrize("split", ["train", "test"])
def test_flat_gz_files_round_trip(tmp_path: Path, fake_fashion, split: str) -> None:
    data = fake_fashion(tmp_path / "idx")
    ds = load_images("fashion-mnist", split, data_dir=str(tmp_path / "idx"), cache_dir=tmp_path / "cache")
    images, labels = data[split]
    assert ds.images.shape == (len(images), 1, 6, 5)
    assert ds.images.dtype == torch.uint8 and ds.labels is not None and ds.labels.dtype == torch.int64
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.tolist() == labels.tolist()
    assert ds.classes is not None and len(ds.classes) == 10 and ds.classes[0] == "T-shirt/top"
    assert ds.name == "fashion-mnist" and ds.paths is None
    # the decompressed staging copy lives in the given cache dir, not next to the source
    assert list((tmp_path / "cache" / "fashion-mnist").glob("*/FashionMNIST/raw/train-images-idx3-ubyte"))


@pytest.mark.parametrize("compressed", [True, False])
def test_torchvision_style_root(tmp_path: Path, fake_fashion, compressed: bool) -> None:
    data = fake_fashion(tmp_path / "root" / "FashionMNIST" / "raw", compressed=compressed)
    ds = load_images("fmnist", "test", data_dir=str(tmp_path / "root"))
    assert np.array_equal(ds.images[:, 0].numpy(), data["test"][0])
    assert ds.labels is not None and ds.labels.tolist() == data["test"][1].tolist()


def test_aliases_and_channel_conversion(tmp_path: Path, fake_fashion) -> None:
    data = fake_fashion(tmp_path / "idx")
    ds = load_images("Fashion_MNIST", data_dir=str(tmp_path / "idx"), channels=3, image_size=12)
    assert ds.images.shape == (5, 3, 12, 12)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # grey replicated
    assert len(data["train"][0]) == len(ds)


def test_system_directory_is_searched(tmp_path: Path, fake_fashion, monkeypatch: pytest.MonkeyPatch) -> None:
    data = fake_fashion(tmp_path / "system")
    monkeypatch.setattr(torchvision_sets, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "system")
    with pytest.warns(UserWarning, match="empty does not exist: using the system copy"):
        ds = load_images("fashion-mnist", data_dir=str(tmp_path / "empty"))  # e.g. a typo in --data-dir
    assert ds.labels is not None and ds.labels.tolist() == data["train"][1].tolist()


def test_missing_files_give_apt_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_images("fashion-mnist", data_dir=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert "--download" in message and "\n" not in message


def test_partial_file_set_is_not_found(tmp_path: Path, fake_fashion) -> None:
    fake_fashion(tmp_path / "idx")
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_images("fashion-mnist", data_dir=str(tmp_path / "idx"))


def test_unknown_split(tmp_path: Path, fake_fashion) -> None:
    fake_fashion(tmp_path / "idx")
    with pytest.raises(DataError, match="'train' and 'test'"):
        load_images("fashion-mnist", "val", data_dir=str(tmp_path / "idx"))


def test_corrupt_gz_is_a_data_error(tmp_path: Path, fake_fashion) -> None:
    fake_fashion(tmp_path / "idx")
    (tmp_path / "idx" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="Fashion-MNIST"):
        load_images("fashion-mnist", data_dir=str(tmp_path / "idx"))


@pytest.mark.slow
def test_real_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_fashion_mnist_dir: Path) -> None:
    monkeypatch.setattr(torchvision_sets, "SYSTEM_FASHION_MNIST_DIR", real_fashion_mnist_dir)
    train = load_images("fashion-mnist", cache_dir=tmp_path)
    assert train.images.shape == (60000, 1, 28, 28)
    assert train.labels is not None and train.labels.bincount().tolist() == [6000] * 10
    assert train.classes is not None and len(train.classes) == 10
    # the hard-coded normalisation statistics are those of this data
    pixels = train.images.double() / 255
    (mean,), (std,) = DATASET_STATS["fashion-mnist"]
    assert abs(pixels.mean().item() - mean) < 1e-4 and abs(pixels.std(unbiased=False).item() - std) < 1e-4
    test = load_images("fashion-mnist", "test", cache_dir=tmp_path)
    assert test.images.shape == (10000, 1, 28, 28)

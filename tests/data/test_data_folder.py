"""Image folders and zips: layouts, labels, splits, pixel round trips, unreadable files, user errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.data import ImageSet, SkippedImagesWarning, load_images
from byol.errors import DataError


def _by_path(ds: ImageSet) -> dict[str, np.ndarray]:
    assert ds.paths is not None
    return {p: ds.images[i].numpy() for i, p in enumerate(ds.paths)}


def test_labeled_folder(labeled_folder) -> None:
    root, expected = labeled_folder
    ds = load_images(str(root), progress=False)
    assert ds.images.shape == (6, 3, 4, 4) and ds.images.dtype == torch.uint8
    assert ds.classes == ["cat", "dog"]
    assert ds.name == "pets" and ds.skipped == []
    assert ds.paths == sorted(expected)  # class-major, then path
    assert ds.labels is not None and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]  # nested/5.png belongs to dog
    for rel, pixels in _by_path(ds).items():
        assert np.array_equal(pixels, expected[rel]), rel


def test_zip_matches_folder(tmp_path: Path, labeled_folder, zip_dir) -> None:
    root, expected = labeled_folder
    archive = zip_dir(root, tmp_path / "pets.zip")
    ds = load_images(str(archive), progress=False)
    assert ds.name == "pets" and ds.classes == ["cat", "dog"]
    assert ds.labels is not None and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    for rel, pixels in _by_path(ds).items():
        assert np.array_equal(pixels, expected[rel]), rel


def test_flat_folder_is_unlabeled(tmp_path: Path, save_image, rgb_pixels) -> None:
    for i in range(3):
        save_image(tmp_path / "flat" / f"img{i}.PNG", Image.fromarray(rgb_pixels(i)))  # upper-case extension
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    (tmp_path / "flat" / ".hidden.png").write_bytes(b"ignored hidden file")
    ds = load_images(str(tmp_path / "flat"), progress=False)
    assert len(ds) == 3 and ds.labels is None and ds.classes is None
    assert ds.paths == ["img0.PNG", "img1.PNG", "img2.PNG"]


def test_single_wrapper_folder_in_zip_is_flat(tmp_path: Path, save_image, rgb_pixels, zip_dir) -> None:
    for i in range(2):
        save_image(tmp_path / "photos" / f"{i}.png", Image.fromarray(rgb_pixels(i)))
    archive = zip_dir(tmp_path / "photos", tmp_path / "photos.zip", prefix="photos/")
    ds = load_images(str(archive), progress=False)
    assert len(ds) == 2 and ds.labels is None and ds.paths == ["photos/0.png", "photos/1.png"]


@pytest.fixture
def split_tree(tmp_path: Path, save_image, rgb_pixels) -> Path:
    """``tree/data/{train,test}/{a,b}/*.png`` with 3+2 train and 1+1 test images."""
    counts = {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}}
    seed = 0
    for split, classes in counts.items():
        for cls, n in classes.items():
            for i in range(n):
                save_image(tmp_path / "tree" / "data" / split / cls / f"{i}.png", Image.fromarray(rgb_pixels(seed)))
                seed += 1
    return tmp_path / "tree"


@pytest.mark.parametrize("as_zip", [False, True])
def test_split_folders_behind_a_wrapper(tmp_path: Path, split_tree: Path, zip_dir, as_zip: bool) -> None:
    source = zip_dir(split_tree, tmp_path / "tree.zip") if as_zip else split_tree
    train = load_images(str(source), "train", progress=False)
    test = load_images(str(source), "test", progress=False)
    assert len(train) == 5 and len(test) == 2
    assert train.classes == test.classes == ["a", "b"]
    assert train.labels is not None and train.labels.tolist() == [0, 0, 0, 1, 1]
    assert test.paths == ["data/test/a/0.png", "data/test/b/0.png"]
    with pytest.raises(DataError, match="no 'val' split.*test, train"):
        load_images(str(source), "val", progress=False)


def test_no_split_folders_only_has_train(labeled_folder) -> None:
    root, _ = labeled_folder
    with pytest.raises(DataError, match="no 'test' split"):
        load_images(str(root), "test", progress=False)


def test_grey_images_give_one_channel(tmp_path: Path, save_image) -> None:
    a = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    save_image(tmp_path / "g" / "a.png", Image.fromarray(a, "L"))
    save_image(tmp_path / "g" / "b.bmp", Image.fromarray(255 - a, "L"))
    ds = load_images(str(tmp_path / "g"), progress=False)
    assert ds.num_channels == 1
    assert np.array_equal(ds.images[0, 0].numpy(), a) and np.array_equal(ds.images[1, 0].numpy(), 255 - a)
    three = load_images(str(tmp_path / "g"), channels=3, progress=False)
    assert three.num_channels == 3 and torch.equal(three.images[:, 0], three.images[:, 1])


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path, save_image) -> None:
    deep = np.array([[0, 257, 32768, 65535]] * 4, dtype=np.uint16)
    path = save_image(tmp_path / "deep" / "x.png", Image.fromarray(deep))
    assert Image.open(path).mode == "I;16"
    save_image(tmp_path / "deep" / "y.tif", Image.fromarray(deep))
    ds = load_images(str(tmp_path / "deep"), progress=False)
    assert ds.num_channels == 1
    for i in range(2):
        assert ds.images[i, 0, 0].tolist() == [0, 1, 128, 255]


def test_mixed_modes_become_rgb(tmp_path: Path, save_image) -> None:
    folder = tmp_path / "mixed"
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent: black, whatever colour it hides
    rgba[0, 1, 3] = 128  # half transparent: composited on black
    save_image(folder / "1_rgba.png", Image.fromarray(rgba, "RGBA"))
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    palette.putpixel((2, 1), 1)
    save_image(folder / "2_palette.png", palette)
    save_image(folder / "3_grey.png", Image.new("L", (4, 4), 77))
    save_image(folder / "4_rgb.jpg", Image.new("RGB", (4, 4), (0, 0, 255)))
    ds = load_images(str(folder), progress=False)
    assert ds.num_channels == 3 and len(ds) == 4
    img = {p.split("_")[1].split(".")[0]: ds.images[i] for i, p in enumerate(ds.paths or [])}
    assert img["rgba"][:, 0, 0].tolist() == [0, 0, 0]
    assert all(abs(v - e) <= 1 for v, e in zip(img["rgba"][:, 0, 1].tolist(), [100, 50, 25]))
    assert img["rgba"][:, 3, 3].tolist() == [200, 100, 50]
    assert img["palette"][:, 1, 2].tolist() == [10, 200, 30] and img["palette"][:, 0, 0].tolist() == [0, 0, 0]
    assert img["grey"][:, 2, 2].tolist() == [77, 77, 77]
    blue = img["rgb"].float().mean(dim=(1, 2))
    assert blue[2] > 240 and blue[0] < 15 and blue[1] < 15


def test_forced_single_channel_uses_luma(tmp_path: Path, save_image) -> None:
    save_image(tmp_path / "c" / "red.png", Image.new("RGB", (3, 3), (255, 0, 0)))
    ds = load_images(str(tmp_path / "c"), channels=1, progress=False)
    assert ds.images.shape == (1, 1, 3, 3) and int(ds.images[0, 0, 1, 1]) == 76  # 0.299 * 255


def test_different_sizes_need_image_size(tmp_path: Path, save_image) -> None:
    folder = tmp_path / "sizes"
    wide = np.tile((np.arange(8, dtype=np.uint8) * 30)[None, :], (4, 1))  # 4 high, 8 wide, columns 0..210
    save_image(folder / "a_wide.png", Image.fromarray(wide, "L"))
    save_image(folder / "b_big.png", Image.new("L", (16, 16), 9))
    save_image(folder / "c_small.png", Image.new("L", (2, 2), 200))
    with pytest.raises(DataError, match="--image-size"):
        load_images(str(folder), progress=False)
    ds = load_images(str(folder), image_size=4, progress=False)
    assert ds.images.shape == (3, 1, 4, 4)
    # shorter side is already 4: only the centre crop applies, keeping columns 2..5
    assert ds.images[0, 0, 0].tolist() == [60, 90, 120, 150]
    assert ds.images[1].unique().tolist() == [9] and ds.images[2].unique().tolist() == [200]


@pytest.mark.parametrize("as_zip", [False, True])
def test_corrupt_files_are_skipped_and_listed_once(tmp_path: Path, labeled_folder, zip_dir, as_zip: bool) -> None:
    root, expected = labeled_folder
    (root / "cat" / "broken.jpg").write_bytes(os.urandom(300))
    (root / "dog" / "empty.png").write_bytes(b"")
    source = zip_dir(root, tmp_path / "pets.zip") if as_zip else root
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_images(str(source), progress=False)
    skipped_warnings = [w for w in caught if issubclass(w.category, SkippedImagesWarning)]
    assert len(skipped_warnings) == 1
    message = str(skipped_warnings[0].message)
    assert "6 images; skipped 2 file(s) (" in message and "1 not an image" in message and "1 empty file" in message
    assert "cat/broken.jpg, dog/empty.png" in message and "\n" not in message
    assert ds.skipped == ["cat/broken.jpg", "dog/empty.png"]
    assert len(ds) == 6 and ds.labels is not None and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    for rel, pixels in _by_path(ds).items():
        assert np.array_equal(pixels, expected[rel]), rel


def test_all_files_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.jpg").write_bytes(os.urandom(50))
    with pytest.raises(DataError, match="none of the 3 image files"):
        load_images(str(tmp_path / "bad"), progress=False)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.mkdir(), "no image files"),
        (lambda p: (p.mkdir(), (p / "readme.txt").write_text("hi")), "no image files"),
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("plain text"), "not a zip archive"),
    ],
    ids=["empty", "no-images", "missing", "not-a-zip"],
)
def test_user_errors_are_one_line(tmp_path: Path, make, match: str) -> None:
    target = tmp_path / "src"
    make(target)
    with pytest.raises(DataError, match=match) as err:
        load_images(str(target), progress=False)
    assert "\n" not in str(err.value)


def test_empty_zip_and_unknown_name(tmp_path: Path, zip_dir) -> None:
    (tmp_path / "nothing").mkdir()
    archive = zip_dir(tmp_path / "nothing", tmp_path / "nothing.zip")
    with pytest.raises(DataError, match="no image files"):
        load_images(str(archive), progress=False)
    with pytest.raises(DataError, match="not a data set name"):
        load_images("imagenet-42", progress=False)


def test_bad_arguments(labeled_folder) -> None:
    root, _ = labeled_folder
    with pytest.raises(DataError, match="channels"):
        load_images(str(root), channels=2)
    with pytest.raises(DataError, match="image size"):
        load_images(str(root), image_size=0)


def test_imageset_subset(labeled_folder) -> None:
    root, _ = labeled_folder
    ds = load_images(str(root), progress=False)
    sub = ds.subset([5, 0])
    assert len(sub) == 2 and sub.num_channels == 3 and sub.image_size == 4
    assert torch.equal(sub.images[0], ds.images[5]) and torch.equal(sub.images[1], ds.images[0])
    assert sub.labels is not None and sub.labels.tolist() == [1, 0]
    assert sub.paths == [ds.paths[5], ds.paths[0]] if ds.paths else False
    assert sub.classes == ds.classes


def test_symlinked_class_folders_are_followed_once(tmp_path: Path, labeled_folder) -> None:
    root, _ = labeled_folder
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "cat").symlink_to(root / "cat")
    (linked / "dog").symlink_to(root / "dog")
    (linked / "dog" / "nested" / "loop").symlink_to(linked)  # a cycle must not hang or duplicate
    ds = load_images(str(linked), progress=False)
    assert len(ds) == 6 and ds.classes == ["cat", "dog"]


@pytest.fixture
def stl_tree(tmp_path: Path, save_image, rgb_pixels) -> Path:
    """The STL-10 layout: ``stl/train/{a,b}`` (2 + 1), ``stl/test/{a,b}`` (1 + 1), ``stl/unlabeled`` (3 images in
    two subfolders: the unlabeled split has no classes whatever its folders)."""
    rels = ["train/a/0.png", "train/a/1.png", "train/b/2.png", "test/a/3.png", "test/b/4.png",
            "unlabeled/x/5.png", "unlabeled/x/6.png", "unlabeled/y/7.png"]
    for i, rel in enumerate(rels):
        save_image(tmp_path / "stl" / rel, Image.fromarray(rgb_pixels(i)))
    return tmp_path / "stl"


def test_unlabeled_split_and_train_plus_unlabeled(stl_tree: Path) -> None:
    train = load_images(str(stl_tree), "train", progress=False)
    assert len(train) == 3 and train.classes == ["a", "b"]  # unlabeled/ is not part of train
    unlabeled = load_images(str(stl_tree), "unlabeled", progress=False)
    assert len(unlabeled) == 3 and unlabeled.labels is None and unlabeled.classes is None
    both = load_images(str(stl_tree), "train+unlabeled", progress=False)
    assert both.paths == train.paths + unlabeled.paths and both.classes == ["a", "b"]
    assert both.labels is not None and both.labels.tolist() == [0, 0, 1, -1, -1, -1]
    assert torch.equal(both.images[:3], train.images) and torch.equal(both.images[3:], unlabeled.images)
    labeled = load_images(str(stl_tree), "train+test", progress=False)
    assert labeled.labels is not None and labeled.labels.tolist() == [0, 0, 1, 0, 1]
    assert load_images(str(stl_tree), "unlabeled+test", progress=False).labels.tolist() == [-1, -1, -1, 0, 1]
    for bad in ("train+train", "train+", "train+training"):
        with pytest.raises(DataError, match="distinct splits"):
            load_images(str(stl_tree), bad, progress=False)
    with pytest.raises(DataError, match="no 'val' split"):
        load_images(str(stl_tree), "train+val", progress=False)


def test_a_lone_unlabeled_folder_is_a_class(tmp_path: Path, save_image, rgb_pixels) -> None:
    for i, rel in enumerate(["cat/0.png", "unlabeled/1.png", "unlabeled/2.png"]):
        save_image(tmp_path / "odd" / rel, Image.fromarray(rgb_pixels(i)))
    ds = load_images(str(tmp_path / "odd"), progress=False)
    assert ds.classes == ["cat", "unlabeled"] and ds.labels is not None and ds.labels.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="no 'unlabeled' split"):
        load_images(str(tmp_path / "odd"), "train+unlabeled", progress=False)

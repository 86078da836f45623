"""Reading the real CIFAR-10 JPEG zip (slow; skipped where the file is absent). The zip is looked for in
the development and CI machines' shared data folder beside the checkout (``../shared/datasets``), wherever
the checkout is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from byol.data import DATASET_STATS, channel_stats, load_images

CIFAR_ZIP = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cifar10-jpeg.zip"


@pytest.mark.slow
def test_cifar10_jpeg_zip_test_split(tmp_path: Path) -> None:
    if not CIFAR_ZIP.is_file():
        pytest.skip(f"{CIFAR_ZIP} not present (CIFAR-10 as a JPEG image-folder zip)")
    ds = load_images(str(CIFAR_ZIP), "test", cache_dir=tmp_path, progress=False)
    assert ds.images.shape == (10000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classes is not None and len(ds.classes) == 10 and ds.classes[0] == "airplane"
    assert ds.labels is not None and ds.labels.bincount().tolist() == [1000] * 10
    assert ds.skipped == [] and ds.paths is not None and ds.paths[0].startswith("cifar10/test/airplane/")
    # JPEG re-encoding shifts the statistics only slightly from the published CIFAR-10 values
    mean, _ = channel_stats(ds.images)
    assert mean == pytest.approx(DATASET_STATS["cifar10"][0], abs=0.015)
    again = load_images(str(CIFAR_ZIP), "test", cache_dir=tmp_path, progress=False)
    assert torch.equal(again.images[::997], ds.images[::997])

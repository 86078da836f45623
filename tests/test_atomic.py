"""The one atomic write (byol.atomic): a write that fails half-way leaves the old file and no temporary file,
and every writer of run files, cards, records and reports goes through it."""

import errno
import json
import os

import numpy as np
import pytest

from byol import atomic
from byol.atomic import atomic_target, atomic_write


def _only(directory):
    return sorted(p.name for p in directory.iterdir())


def test_text_bytes_and_writer_land_whole(tmp_path):
    assert atomic_write(tmp_path / "sub" / "a.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "c.npy", lambda f: np.save(f, np.arange(3)))
    assert np.load(tmp_path / "c.npy").tolist() == [0, 1, 2]
    assert _only(tmp_path) == ["b.bin", "c.npy", "sub"] and _only(tmp_path / "sub") == ["a.txt"]


def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("old")

    def half(f):
        f.write(b"new but cut")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, half)
    assert path.read_text() == "old" and _only(tmp_path) == ["card.json"]


def test_a_full_disk_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old: 1\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError) as err:
        atomic_write(path, "new: 2\n")
    assert err.value.errno == errno.ENOSPC
    assert path.read_text() == "old: 1\n" and _only(tmp_path) == ["config.yaml"]


def test_a_failed_rename_removes_the_temp(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "x.json", "{}")
    assert _only(tmp_path) == []


def test_atomic_target_renames_what_another_tool_made(tmp_path):
    with atomic_target(tmp_path / "lib.so") as tmp:
        assert tmp.parent == tmp_path and tmp.name != "lib.so"
        tmp.write_bytes(b"ELF")
    assert (tmp_path / "lib.so").read_bytes() == b"ELF" and _only(tmp_path) == ["lib.so"]
    with pytest.raises(RuntimeError), atomic_target(tmp_path / "lib.so") as tmp:
        os.symlink(tmp_path / "nowhere", tmp)  # a dangling symlink is removed too
        raise RuntimeError("the build failed")
    assert (tmp_path / "lib.so").read_bytes() == b"ELF" and _only(tmp_path) == ["lib.so"]


@pytest.fixture
def spy(monkeypatch):
    """``spy(module)``: route ``module.atomic_write`` through a recorder of the paths written."""
    written = []

    def install(module):
        def record(path, data, **kw):
            written.append(os.path.basename(path))
            return atomic_write(path, data, **kw)

        monkeypatch.setattr(module, "atomic_write", record)
        return written

    return install


def test_run_files_go_through_it(tmp_path, spy):
    from byol.run import files

    written = spy(files)
    files.write_run_files(tmp_path, {"a": 1}, {"torch": "x"}, ["bad.png"])
    files.write_summary(tmp_path, {"steps": 3, "method": object()})
    assert written == ["config.yaml", "env.json", "skipped_files.txt", "summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"steps": 3}


def test_checkpoints_go_through_it(tmp_path, spy):
    from byol.run import checkpoints

    written = spy(checkpoints)
    checkpoints.save_checkpoint({"step": 1}, tmp_path / "last.pt")
    assert written == ["last.pt.sha256", "last.pt"] and checkpoints.verify(tmp_path / "last.pt") is None


def test_cards_subsets_and_features_go_through_it(tmp_path, spy):
    import torch

    from byol.eval import cards, feature_cache, subsets

    written = spy(cards)
    spy(subsets)
    spy(feature_cache)
    cards.write_card(tmp_path, {"protocol": "knn"}, "knn-x.json")
    subsets.make_label_split(torch.arange(4).repeat(10), "50%", seed=0).save(tmp_path / "labels.json")
    feature_cache.features_for(torch.nn.Flatten(), torch.zeros(2, 1, 4, 4, dtype=torch.uint8), cache_dir=tmp_path,
                               encoder_id="e", dataset="d", split="train", size=4, mean=[0.5], std=[0.5])
    assert written[:2] == ["knn-x.json", "labels.json"]
    assert [os.path.splitext(n)[1] for n in written[2:]] == [".npy", ".json"]


def test_records_and_reports_go_through_it(tmp_path, spy):
    from byol.eval.cards import make_card, write_card
    from byol.reports import plots, tables
    from byol.reproduce import runner

    written = spy(runner)
    spy(tables)
    spy(plots)
    runner.write_record(tmp_path / "cells" / "r.json", {"top1": 1.0})
    write_card(tmp_path / "run" / "eval", make_card(
        protocol="knn", metrics={"k20": 50.0}, dataset="d", splits={"train": 10, "test": 5},
        hyperparameters={"labels": "100%"}, encoder={"kind": "checkpoint"}, seed=0, timing={"seconds": 1.0}),
        "knn-d.json")
    tables.build_report([tmp_path / "run"], tmp_path / "report.md", png=True)
    assert written == ["r.json", "report.md", "report.png"]
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"

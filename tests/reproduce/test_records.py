"""Every committed record of docs/results/cells says which code made it (issue: traceable records).

The records written before provenance existed are listed here by id, and the list may only shrink: each is
re-run by the 3-epoch rung of the scale ladder (docs/results/ladder.md), after which its entry must go (the
test fails while a listed record has provenance, so the list cannot go stale), and a new record without
provenance fails at once.
"""

import json
from pathlib import Path

import pytest

CELLS = Path(__file__).resolve().parents[2] / "docs" / "results" / "cells"

#: Records of 2026-12-01/02, before records carried provenance: to be re-run (ladder.md, the 3-epoch rung).
WITHOUT_PROVENANCE = frozenset({
    "04faf1097bb6-s0", "05932a90227e-s0", "0970cc24c277-s1", "2af0a6c67c07-s0", "480e26b9b96d-s1", "4a65f1767475-s0",
    "4c6ebeeda652-s1", "6d18b5bf0497-s0", "6fe1e0088d56-s1", "821a65d86f49-s1", "889010c0aeb7-s0", "ab1a33c7c71b-s1",
    "abcaf1a926e9-s1", "c19ba585ff4e-s1", "d152f5fb8671-s0", "d39529b6e24f-s0", "d854c4e0dcdf-s1", "e0d5de20c024-s0",
    "f489800f93f9-s1", "fa67607813cb-s0",
})


def _records():
    return sorted(CELLS.glob("*.json"))


def test_there_are_committed_records():
    assert len(_records()) >= 40


@pytest.mark.parametrize("path", _records(), ids=lambda p: p.stem)
def test_a_record_names_its_commit_versions_and_resolved_config(path):
    record = json.loads(path.read_text())
    if path.stem in WITHOUT_PROVENANCE:
        assert "provenance" not in record, f"{path.stem} has provenance now: remove it from WITHOUT_PROVENANCE"
        return
    p = record.get("provenance")
    assert p, f"{path.name} has no provenance"
    assert len(p["git_commit"]) == 40 and p["git_dirty"] is False, "a committed result comes from a clean commit"
    assert all(p.get(k) for k in ("byol", "torch", "torchvision", "cpu", "argv"))
    config = p["config"]
    assert {"data", "model", "method", "optim", "views", "train"} <= set(config)
    assert config["method"]["name"] == record["method"] or record["method"] == "random-init"
    if record["method"] != "random-init":  # a fixed length, or a budget within an upper bound of epochs
        planned = config["train"]["epochs"]
        assert record["epochs"] == pytest.approx(planned) if config["train"]["budget"] is None \
            else record["epochs"] <= planned + 1e-9


def test_the_legacy_list_names_only_existing_records():
    assert WITHOUT_PROVENANCE <= {p.stem for p in _records()}

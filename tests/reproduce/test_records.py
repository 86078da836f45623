"""Every committed record of docs/results/cells says which code made it (issue: traceable records).

The records written before provenance existed were re-run by the 3-epoch rung of the scale ladder
(docs/results/ladder.md) or, where no report read them any more, removed; since then a record without
provenance fails here.
"""

import json
from pathlib import Path

import pytest

CELLS = Path(__file__).resolve().parents[2] / "docs" / "results" / "cells"


def _records():
    return sorted(CELLS.glob("*.json"))


def test_there_are_committed_records():
    assert len(_records()) >= 40


@pytest.mark.parametrize("path", _records(), ids=lambda p: p.stem)
def test_a_record_names_its_commit_versions_and_resolved_config(path):
    record = json.loads(path.read_text())
    p = record.get("provenance")
    assert p, f"{path.name} has no provenance"
    assert len(p["git_commit"]) == 40 and p["git_dirty"] is False, "a committed result comes from a clean commit"
    assert all(p.get(k) for k in ("byol", "torch", "torchvision", "cpu", "argv"))
    config = p["config"]
    assert {"data", "model", "method", "optim", "views", "train"} <= set(config)
    assert config["method"]["name"] == record["method"] or record["method"] == "random-init"
    if record["method"] != "random-init":  # a fixed length, or a budget within an upper bound of epochs
        planned = config["train"]["epochs"]
        if config["train"]["budget"] is None:  # a fractional length (equal steps) rounds its last step up
            per_step = record["epochs"] / record["steps"]
            assert planned - 1e-9 <= record["epochs"] < planned + per_step + 1e-9
        else:
            assert record["epochs"] <= planned + 1e-9

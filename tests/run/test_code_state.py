"""A record names the commit of the code its process imported: git is read once, when the process pins it."""

import subprocess

import torch

from byol.run import files


def test_the_commit_is_read_once_per_process(monkeypatch):
    files._git_state.cache_clear()
    calls: list[list[str]] = []
    real = subprocess.run

    def counting(args, **kw):
        if list(args)[:1] == ["git"]:
            calls.append(list(args))
        return real(args, **kw)

    monkeypatch.setattr(files.subprocess, "run", counting)
    try:
        files.pin_code_state()
        pinned = len(calls)
        first = files.env_info(torch.device("cpu"))
        second = files.env_info(torch.device("cpu"))
        assert pinned >= 1
        assert len(calls) == pinned  # a commit made after the pin would not be seen: later records keep it
        assert first["git_commit"] == second["git_commit"] and first["git_dirty"] == second["git_dirty"]
    finally:
        files._git_state.cache_clear()


def test_a_record_of_other_code_than_this_process_runs_is_flagged(monkeypatch):
    monkeypatch.setattr(files, "_git_state", lambda: ("a" * 40, False))
    same = {"git_commit": "a" * 40, "git_dirty": False}
    assert files.code_changed(same) is None
    line = files.code_changed({"git_commit": "b" * 40, "git_dirty": True})
    assert line is not None and "bbbbbbbbbb with uncommitted changes" in line and "started at aaaaaaaaaa" in line
    assert files.code_changed({"git_commit": "a" * 40, "git_dirty": True}) is not None  # an edit, same commit
    monkeypatch.setattr(files, "_git_state", lambda: ("", None))  # not a checkout: nothing to compare
    assert files.code_changed(same) is None

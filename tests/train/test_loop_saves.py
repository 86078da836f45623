"""When the loop saves: the time-based ``last.pt`` refresh (``train.ckpt_minutes``, on the trainer's injected
clock) and the collapse stop (``train.stop_on_collapse``), which must leave the earlier checkpoint as it was."""

import pytest
import torch

from byol.errors import TrainingError
from byol.run.checkpoints import read_checkpoint
from test_loop import _forward_patched, _trainer  # tests/train is on sys.path (pytest's rootdir-less import)


def _recorded_saves(t):
    """The steps at which ``t`` saves, and whether each was numbered."""
    saves, inner = [], t.save

    def save(numbered=False):
        saves.append((t.state.step, numbered))
        inner(numbered)

    t.save = save
    return saves


@pytest.mark.parametrize("minutes, expected", [(2.5, [3, 6, 9, 12]), (60.0, [])])
def test_last_pt_is_refreshed_when_it_is_ckpt_minutes_old(labeled_images, tmp_path, minutes, expected):
    t = _trainer(labeled_images[0], tmp_path, epochs=2, ckpt_every=1000, ckpt_seconds=minutes * 60)
    t.clock = lambda: 60.0 * t.state.step  # one minute per step
    saves = _recorded_saves(t)
    summary = t.fit()
    assert summary["steps"] == 14
    assert saves == [(s, False) for s in expected] + [(14, False)]  # every 3 minutes (> 2.5), and the end
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["state"]["step"] == 14


def test_a_collapse_stop_keeps_the_earlier_checkpoint(labeled_images, tmp_path):
    t = _trainer(labeled_images[0], tmp_path, epochs=2, ckpt_every=2, stop_on_collapse=True)
    _forward_patched(t, lambda out: {**out, "proj": torch.ones_like(out["proj"])}, from_call=1)  # all one point
    saved = {}
    inner = t.save

    def save(numbered=False):
        inner(numbered)
        saved["method"] = {k: v.clone() for k, v in t.method.state_dict().items()}

    t.save = save
    last = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(TrainingError, match=rf"^collapse at step 3 .*; stopped without saving, the last good "
                                            rf"checkpoint is {last} \(step 2\)$"):
        t.fit()
    ckpt = read_checkpoint(last)
    assert ckpt["state"]["step"] == 2
    assert all(torch.equal(ckpt["method"][k], v) for k, v in saved["method"].items())  # not the collapsed step's
    assert not all(torch.equal(ckpt["method"][k], v) for k, v in t.method.state_dict().items())  # step 3 moved on
    assert sorted(p.name for p in last.parent.glob("step*.pt")) == ["step0000002.pt"]

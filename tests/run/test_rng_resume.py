"""A checkpoint whose random state came from another machine resumes (issue 26): on another device type (the view
generator's state differs in kind and size) or with fewer visible GPUs, with one warning and a fresh seeded
generator, instead of crashing in ``Generator.set_state`` / ``torch.cuda.set_rng_state_all``."""

import pytest
import torch

from byol.config import find_preset
from byol.run.checkpoints import read_checkpoint, restore_rng, rng_state, save_checkpoint
from byol.train.config import build_config
from byol.train.loop import Trainer
from byol.train.pretrain import run_pretrain

CANNOT = "random state cannot be continued exactly"


def _from_cuda(rng: dict) -> dict:
    """``rng`` as a CUDA run saves it: the views' generator is a Philox seed and offset (16 bytes)."""
    return {**rng, "augment": torch.zeros(16, dtype=torch.uint8), "augment_device": "cuda"}


def test_a_view_generator_of_another_device_type_is_reseeded_with_one_warning():
    gen = torch.Generator().manual_seed(5)
    with pytest.warns(UserWarning, match=CANNOT) as caught:
        restore_rng(_from_cuda(rng_state(gen)), gen, reseed=1234)
    assert len(caught) == 1 and "ran on cuda and this run's is on cpu" in str(caught[0].message)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(1234).get_state())
    # a checkpoint written before the device was stored: told by the state's size
    older = _from_cuda(rng_state(gen))
    del older["augment_device"]
    with pytest.warns(UserWarning, match=CANNOT):
        restore_rng(older, gen, reseed=99)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(99).get_state())


def test_the_same_device_type_continues_exactly_and_silently(recwarn):
    gen = torch.Generator().manual_seed(5)
    saved = rng_state(gen)
    expected = torch.rand(3, generator=gen)
    restore_rng(saved, gen, reseed=1)
    assert torch.equal(torch.rand(3, generator=gen), expected) and not recwarn.list


def test_fewer_visible_gpus_restore_those_there_are(monkeypatch):
    """8 GPUs' CUDA states, 2 visible: the first 2 are restored (a third would be an invalid device)."""
    restored = []

    def set_state(state, device=0):
        if int(device) >= 2:
            raise RuntimeError("CUDA error: invalid device ordinal")
        restored.append(int(device))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_state)
    gen = torch.Generator().manual_seed(5)
    rng = {"torch": torch.get_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 8,
           "augment": gen.get_state(), "augment_device": "cpu"}
    with pytest.warns(UserWarning, match="CUDA random states of 8 GPUs and 2 are visible"):
        restore_rng(rng, gen, reseed=1)
    assert restored == [0, 1]


def test_a_run_checkpointed_on_cuda_resumes_on_the_cpu(image_folder, tmp_path):
    """The whole resume: a CPU run's last.pt rewritten as a CUDA run would have saved its generator."""
    overrides = [f"data.source={image_folder}", f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1",
                 "train.knn_every=0", "train.verdict=false", "train.threads=1"]
    cfg = build_config(files=[find_preset("tiny")], overrides=overrides)
    run = tmp_path / "run"
    step = Trainer._optimizer_step

    def stop_after_three(self, micro_batches):
        out = step(self, micro_batches)
        if self.state.step == 3:
            self.request_stop()
        return out

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "_optimizer_step", stop_after_three)
        run_pretrain(cfg, run)
    last = run / "checkpoints" / "last.pt"
    ckpt = read_checkpoint(last)
    assert ckpt["state"]["step"] == 3
    save_checkpoint({**ckpt, "rng": _from_cuda(ckpt["rng"])}, last)
    with pytest.warns(UserWarning, match=CANNOT):
        summary = run_pretrain(cfg, run, resume=True)
    assert summary["stop_reason"] == "completed" and summary["steps"] == 7

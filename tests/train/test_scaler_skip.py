"""fp16 with a gradient scaler: a step the scaler skips (inf/NaN gradients) trains nothing, so BYOL's target
(the EMA) and the lr / tau schedules must not move either; the step is retried on the next batch."""

import dataclasses

import torch

from byol.augment import TwoViewAugment, paper_views
from byol.config import OptimConfig, TrainConfig
from byol.data.batches import CachedImages
from byol.methods import BYOLConfig
from byol.train.loop import LoopOptions, Trainer
from byol.methods import BYOL
from byol.models import build_backbone
from byol.optim.optimizers import build_optimizer

POISONED = 3  #: the optimizer step (1-based attempt) whose gradients are made infinite


def _snapshot(trainer: Trainer) -> dict:
    m = trainer.method
    return {"step": trainer.state.step, "lr": trainer.opt.param_groups[0]["lr"],
            "target": [p.detach().clone() for p in [*m.target_encoder.parameters(), *m.target_projector.parameters()]],
            "online": [p.detach().clone() for p in m.encoder.parameters()]}


def test_a_step_the_scaler_skips_moves_neither_the_target_nor_the_schedules(labeled_images):
    torch.manual_seed(0)
    method = BYOL(lambda: build_backbone("convnet", in_channels=1, widths=[4, 8]),
                  BYOLConfig(proj_hidden=16, proj_dim=8, pred_hidden=16, tau_base=0.9, target_init="copy"))
    opt = build_optimizer("lars", method.trainable_modules(), lr=0.2, weight_decay=1e-6)
    t1, t2 = paper_views()
    views = TwoViewAugment(t1.replace(blur_p=0.0), t2.replace(blur_p=0.0), 16, [0.3], [0.3])
    options = dataclasses.replace(
        LoopOptions.from_config(TrainConfig(epochs=1, log_every=1, progress=False, channels_last=False, amp="off"),
                                OptimConfig(warmup_epochs=1, batch_size=16), evaluate_every=0.0), peak_lr=0.2)
    snapshots, poison = [], {"on": False}

    def augment(x, g):  # called once at the start of every optimizer step (no accumulation)
        snapshots.append(_snapshot(trainer))
        poison["on"] = len(snapshots) == POISONED
        return views(x, g)

    trainer = Trainer(method, opt, augment, CachedImages(labeled_images[0]), batch_size=16, device=torch.device("cpu"),
                      options=options)
    # what fp16 on CUDA uses; the CPU scaler runs the same skip logic
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    first = next(iter(method.encoder.parameters()))
    first.register_hook(lambda grad: torch.full_like(grad, float("inf")) if poison["on"] else grad)

    result = trainer.fit()

    before, after = snapshots[POISONED - 1], snapshots[POISONED]
    assert after["step"] == before["step"] == POISONED - 1  # the step counter did not advance
    assert after["lr"] == before["lr"]  # nor the lr schedule (still in warmup: it would have grown)
    for a, b in zip(before["target"], after["target"]):
        assert torch.equal(a, b)  # the EMA target did not move
    for a, b in zip(before["online"], after["online"]):
        assert torch.equal(a, b)  # the optimizer step was skipped
    # the steps around it did move the target
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[1]["target"], snapshots[2]["target"]))
    assert trainer.scaler.get_scale() < 2.0**8
    total = len(labeled_images[0]) // 16
    assert result["steps"] == total and trainer.skipped_steps == 1
    assert len(snapshots) == total + 1  # the skipped step was retried on the next batch

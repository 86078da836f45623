"""The minibatch loop shared by fine-tuning and the SGD linear probe."""

import pytest
import torch

from byol.eval.training import epoch_steps, shuffled_batches, train_steps
from byol.optim.schedules import warmup_cosine


def test_shuffled_batches_are_seeded_epochs_without_the_short_batch():
    batches = list(shuffled_batches(10, 4, 6, torch.Generator().manual_seed(0)))
    assert [b.numel() for b in batches] == [4] * 6
    for epoch in (batches[0:2], batches[2:4], batches[4:6]):  # 2 full batches per epoch, 2 images left out
        seen = torch.cat(epoch)
        assert seen.unique().numel() == 8 and int(seen.max()) < 10
    again = list(shuffled_batches(10, 4, 6, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not torch.equal(batches[0], batches[2])  # reshuffled every epoch
    assert epoch_steps(3, 10, 4) == 6 and epoch_steps(0.01, 10, 4) == 1 and epoch_steps(1, 3, 8) == 1


def test_train_steps_lr_follows_warmup_cosine_per_group_and_stops_on_none():
    w = torch.zeros(2, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [w], "lr": 0.4}, {"params": [b], "lr": 0.1}])
    x, y = torch.arange(24, dtype=torch.uint8).view(6, 1, 2, 2), torch.zeros(6, dtype=torch.int64)
    seen, views = [], []

    def loss(inputs, labels):
        seen.append([g["lr"] for g in opt.param_groups])
        return (inputs.sum() * 0 + w.sum() + b.sum()) if len(seen) < 5 else None

    def augment(batch, gen):
        views.append(gen)
        return batch.float()

    done = train_steps(opt, x, y, loss=loss, augment=augment, steps=8, batch_size=3, seed=0,
                       device=torch.device("cpu"))
    assert done == 4 and len(seen) == 5  # the 5th loss said stop: no step taken
    assert seen == [[warmup_cosine(k, 8, 0.4, 0), warmup_cosine(k, 8, 0.1, 0)] for k in range(5)]
    assert seen[0] == [0.4, 0.1] and all(v is views[0] for v in views)  # CPU: one seeded generator
    assert w.tolist() == pytest.approx([-sum(lr for lr, _ in seen[:4])] * 2)

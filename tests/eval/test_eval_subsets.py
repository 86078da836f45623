import json

import pytest
import torch

from byol.errors import ConfigError, DataError
from byol.eval.splits import stratified_split
from byol.eval.subsets import balanced_subset, make_label_split, parse_labels


def _labels(counts=(40, 40, 40)):
    return torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])[
        torch.randperm(sum(counts), generator=torch.Generator().manual_seed(3))
    ]


@pytest.mark.parametrize(
    "text, fraction, count, tag",
    [("1%", 0.01, None, "1pct"), ("10%", 0.1, None, "10pct"), ("100%", 1.0, None, "100pct"),
     ("0.5%", 0.005, None, "0p5pct"), ("500", None, 500, "500"), (" 12 ", None, 12, "12")],
)
def test_parse_labels_forms(text, fraction, count, tag):
    spec = parse_labels(text)
    assert spec.count == count and spec.tag == tag
    assert spec.fraction == pytest.approx(fraction) if fraction else spec.fraction is None


@pytest.mark.parametrize("bad", ["0%", "101%", "abc", "0", "-5", "1.5", "10 %%", ""])
def test_parse_labels_rejects(bad):
    with pytest.raises(ConfigError, match="--labels"):
        parse_labels(bad)


@pytest.mark.parametrize("spec, per_class", [("30", 10), ("10%", 4), ("25%", 10), ("100%", 40)])
def test_subset_is_class_balanced(spec, per_class):
    y = _labels()
    idx = balanced_subset(y, spec, seed=0)
    assert idx.unique().numel() == idx.numel() and bool((idx[1:] > idx[:-1]).all())  # sorted, no repeats
    assert torch.bincount(y[idx], minlength=3).tolist() == [per_class] * 3


def test_subset_remainder_and_scarce_class():
    y = _labels()
    counts = torch.bincount(y[balanced_subset(y, "31", seed=0)], minlength=3).tolist()
    assert sorted(counts) == [10, 10, 11]
    # a class with only 5 images gives all of them; the other classes share the rest evenly
    y = _labels((5, 40, 40))
    assert torch.bincount(y[balanced_subset(y, "45", seed=0)], minlength=3).tolist() == [5, 20, 20]
    with pytest.raises(DataError, match="asks for 200"):
        balanced_subset(y, "200")


def test_subset_seeding():
    y = _labels()
    a = balanced_subset(y, "30", seed=0)
    assert torch.equal(a, balanced_subset(y, "30", seed=0))
    assert not torch.equal(a, balanced_subset(y, "30", seed=1))
    # with one seed, the smaller subset is inside the larger one
    small, large = balanced_subset(y, "10%", seed=4), balanced_subset(y, "50%", seed=4)
    assert bool(torch.isin(small, large).all())


def test_label_split_disjoint_from_val_and_test():
    y = _labels()
    keep, test = stratified_split(y, 0.2, seed=0)
    assert torch.bincount(y[test], minlength=3).tolist() == [8, 8, 8]
    assert not bool(torch.isin(keep, test).any()) and keep.numel() + test.numel() == y.numel()
    allowed = torch.zeros(y.numel(), dtype=torch.bool)
    allowed[keep] = True
    s = make_label_split(y, "30", seed=0, allowed=allowed)
    assert not s.refit
    assert not bool(torch.isin(s.labeled, test).any())
    assert not bool(torch.isin(s.val, test).any())
    assert not bool(torch.isin(s.val, s.labeled).any())
    assert torch.bincount(y[s.labeled], minlength=3).tolist() == [10, 10, 10]
    assert torch.bincount(y[s.val], minlength=3).tolist() == [10, 10, 10]  # default: max(10, per class)
    assert torch.equal(s.select_train, s.labeled)
    s2 = make_label_split(y, "30", seed=0, allowed=allowed)
    assert torch.equal(s.val, s2.val) and torch.equal(s.labeled, s2.labeled)
    s3 = make_label_split(y, "30", seed=7, allowed=allowed)
    assert not torch.equal(s.labeled, s3.labeled)


def test_label_split_all_labels_refits(tmp_path):
    y = _labels()
    s = make_label_split(y, "100%", seed=0)
    assert s.refit and s.labeled.numel() == 120
    assert bool(torch.isin(s.val, s.labeled).all()) and torch.bincount(y[s.val]).tolist() == [4, 4, 4]
    train = s.select_train
    assert train.numel() == 108 and not bool(torch.isin(train, s.val).any())
    data = json.loads(s.save(tmp_path / "sub.json", dataset="x").read_text())
    assert data["labels"] == "100%" and data["n_val"] == 12 and len(data["labeled"]) == 120 and data["dataset"] == "x"


def test_stratified_split_is_pinned():
    """The one split behind the linear probes' validation sets, a folder's carved test split and the
    100% label split's validation set: its output for a seed is part of cached features and label-subset
    files, so a change must be deliberate."""
    y = torch.tensor([0, 1, 2] * 5 + [3])  # class 3 has a single sample: it stays in keep
    keep, held = stratified_split(y, 0.4, 0)
    assert keep.tolist() == [1, 2, 3, 4, 5, 6, 7, 9, 11, 15] and held.tolist() == [0, 8, 10, 12, 13, 14]
    s = make_label_split(y[:15], "100%", seed=4)
    assert torch.equal(s.val, stratified_split(y[:15], 0.1, 5)[1])  # labeled = everything, val seed = seed + 1
    with pytest.raises(ConfigError, match="test fraction must be in"):
        stratified_split(y, 1.0, name="test fraction")

import pytest
import torch

from byol.errors import ConfigError, DataError
from byol.eval import knn_eval, knn_predict


def _data(n_train=300, n_test=50, d=16, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    xtr, xte = torch.randn(n_train, d, generator=g), torch.randn(n_test, d, generator=g)
    ytr, yte = torch.randint(0, k, (n_train,), generator=g), torch.randint(0, k, (n_test,), generator=g)
    return xtr, ytr, xte, yte


def _reference_predict(xtr, ytr, xte, k, temperature, num_classes, weighting="exp"):
    """Brute force: full float64 similarity matrix, torch.topk, explicit Python vote loops."""
    a = xtr.double() / xtr.double().norm(dim=1, keepdim=True)
    q = xte.double() / xte.double().norm(dim=1, keepdim=True)
    sim = q @ a.t()  # the full N_test x N_train matrix
    preds = []
    for i in range(q.shape[0]):
        vals, idx = sim[i].topk(min(k, len(ytr)))
        votes = [0.0] * num_classes
        for s, j in zip(vals.tolist(), idx.tolist()):
            votes[int(ytr[j])] += torch.exp(torch.tensor(s / temperature)).item() if weighting == "exp" else 1.0
        preds.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(preds)


@pytest.mark.parametrize("weighting", ["exp", "uniform"])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_matches_brute_force_reference(weighting, temperature):
    xtr, ytr, xte, yte = _data()
    preds = knn_predict(xtr, ytr, xte, k=(1, 7, 20), temperature=temperature, weighting=weighting)
    for k in (1, 7, 20):
        ref = _reference_predict(xtr, ytr, xte, k, temperature, 5, weighting)
        assert torch.equal(preds[k], ref), k
    res = knn_eval(xtr, ytr, xte, yte, k=(1, 7, 20), temperature=temperature, weighting=weighting)
    assert set(res) == {"k1", "k7", "k20"}
    assert res["k7"] == pytest.approx(100 * (preds[7] == yte).double().mean().item())


def test_chunking_gives_identical_results_and_default_keys():
    xtr, ytr, xte, yte = _data(n_train=500, n_test=97)
    full = knn_predict(xtr, ytr, xte, batch_size=10_000)
    for bs in (1, 13, 96):
        chunked = knn_predict(xtr, ytr, xte, batch_size=bs)
        assert all(torch.equal(full[k], chunked[k]) for k in (20, 200))
    assert set(knn_eval(xtr, ytr, xte, yte)) == {"k20", "k200"}


def test_uniform_is_majority_vote_exp_favours_the_close_neighbour():
    # 2-D, k = 3: the nearest neighbour (label 1) is much closer than the two others (label 0).
    xtr = torch.tensor([[1.0, 0.05], [0.0, 1.0], [0.05, 1.0], [-1.0, 0.0]])
    ytr = torch.tensor([1, 0, 0, 2])
    xte = torch.tensor([[1.0, 0.6]])
    uni = knn_predict(xtr, ytr, xte, k=3, weighting="uniform")[3]
    exp = knn_predict(xtr, ytr, xte, k=3, temperature=0.07)[3]
    assert uni.tolist() == [0] and exp.tolist() == [1]
    assert knn_predict(xtr, ytr, xte, k=1, weighting="uniform")[1].tolist() == [1]


def test_cosine_scale_invariance_and_small_temperature_is_stable():
    xtr, ytr, xte, _ = _data()
    scales = torch.rand(len(xtr), 1) * 10 + 0.1
    a = knn_predict(xtr, ytr, xte, k=20)[20]
    b = knn_predict(xtr * scales, ytr, xte * 3.0, k=20)[20]
    assert torch.equal(a, b)
    tiny = knn_predict(xtr, ytr, xte, k=20, temperature=1e-3)[20]  # exp(1/1e-3) would overflow
    assert torch.equal(tiny, knn_predict(xtr, ytr, xte, k=1)[1])  # -> nearest neighbour


def test_k_larger_than_train_set_uses_everything():
    xtr, ytr, xte, yte = _data(n_train=30)
    res = knn_predict(xtr, ytr, xte, k=(30, 200), weighting="uniform")
    assert torch.equal(res[30], res[200])
    majority = torch.bincount(ytr, minlength=5).argmax()
    assert (res[200] == majority).all()


def test_collapsed_features_give_at_most_majority_accuracy():
    g = torch.Generator().manual_seed(1)
    ytr = torch.multinomial(torch.tensor([0.4, 0.3, 0.2, 0.1]), 1000, replacement=True, generator=g)
    yte = torch.multinomial(torch.tensor([0.4, 0.3, 0.2, 0.1]), 300, replacement=True, generator=g)
    share = 100 * torch.bincount(yte, minlength=4).max().item() / len(yte)
    for feats in (torch.ones, torch.zeros):
        res = knn_eval(feats(1000, 8), ytr, feats(300, 8), yte)
        assert all(v <= share + 1e-9 for v in res.values()), res
    # uninformative (random) features: near the majority share, not above it by much
    res = knn_eval(torch.randn(1000, 8, generator=g), ytr, torch.randn(300, 8, generator=g), yte)
    assert all(v <= share + 6.0 for v in res.values()), res


def test_errors():
    xtr, ytr, xte, yte = _data()
    with pytest.raises(ConfigError):
        knn_eval(xtr, ytr, xte, yte, k=0)
    with pytest.raises(ConfigError):
        knn_eval(xtr, ytr, xte, yte, weighting="cosine")
    with pytest.raises(ConfigError):
        knn_eval(xtr, ytr, xte, yte, temperature=0.0)
    with pytest.raises(DataError):
        knn_eval(xtr, ytr, xte[:, :3], yte)
    with pytest.raises(DataError):
        knn_eval(xtr, ytr.float(), xte, yte)

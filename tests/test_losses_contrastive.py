"""The contrastive losses (SimCLR's NT-Xent, MoCo's InfoNCE, BYOL's InfoNCE_{alpha,beta}) against plain
float64 loops over the formulas as the papers write them, closed-form cases, and the cross-process gather."""

import math

import numpy as np
import pytest
import torch

from byol.runtime.dist import all_gather_with_grad
from byol.losses import byol_infonce_loss, byol_loss, info_nce, infonce_alpha_beta, nt_xent

# Small hand-made inputs (no two rows parallel, mixed signs, different norms).
Z1 = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [2.0, 2.0, -1.0]]
Z2 = [[1.0, 0.2, 1.5], [-1.0, 0.5, 0.3], [0.0, 1.0, 1.0]]
Z3 = [[0.3, -2.0, 1.0], [1.5, 0.5, 0.5], [-0.7, 0.1, 2.0]]
Z4 = [[2.0, 1.0, 0.0], [0.0, -0.5, -1.0], [1.0, -1.0, 1.0]]
QUEUE = [[0.6, 0.8, 0.0], [0.0, 0.6, -0.8], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # unit rows, as MoCo stores them


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ref_nt_xent(z1, z2, t):
    """Chen et al. 2020, Eq. 1, averaged over the 2N anchors (each view of each image)."""
    z, n = list(z1) + list(z2), len(z1)
    total = 0.0
    for a in range(2 * n):
        pos = a + n if a < n else a - n
        denominator = sum(math.exp(_cos(z[a], z[b]) / t) for b in range(2 * n) if b != a)
        total += -math.log(math.exp(_cos(z[a], z[pos]) / t) / denominator)
    return total / (2 * n)


def _ref_info_nce(q, k, queue, t):
    """He et al. 2020, Eq. 1: -log exp(q.k+/t) / (exp(q.k+/t) + sum_neg exp(q.k-/t)), queue rows as given."""
    total = 0.0
    for qi, ki in zip(q, k):
        qn = np.asarray(qi, np.float64) / np.linalg.norm(qi)
        pos = math.exp(_cos(qi, ki) / t)
        neg = sum(math.exp(float(qn @ np.asarray(kj, np.float64)) / t) for kj in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


def _ref_infonce_ab(p, t_same, t_other, alpha, beta):
    """Grill et al. 2020, App. I: 2/B sum_i S(v_i,v'_i) - beta 2alpha/B sum_i ln(sum_{j!=i} e^{S(v_i,v_j)/alpha}
    + sum_j e^{S(v_i,v'_j)/alpha}), S(u, w) = cos(online(u), target(w))."""
    b = len(p)
    first = 2.0 / b * sum(_cos(p[i], t_other[i]) for i in range(b))
    second = 0.0
    for i in range(b):
        s = sum(math.exp(_cos(p[i], t_same[j]) / alpha) for j in range(b) if j != i)
        s += sum(math.exp(_cos(p[i], t_other[j]) / alpha) for j in range(b))
        second += math.log(s)
    return first - beta * 2.0 * alpha / b * second


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_the_papers_formula(temperature):
    got = nt_xent(_t(Z1), _t(Z2), temperature).item()
    assert got == pytest.approx(_ref_nt_xent(Z1, Z2, temperature), rel=1e-5)


def test_nt_xent_closed_form_for_identical_views_of_orthonormal_images():
    # positives at cosine 1, every negative at cosine 0: l = log(1 + (2N - 2) e^{-1/T}) for every anchor
    n, t = 4, 0.2
    z = torch.eye(n) * torch.tensor([[1.0], [3.0], [0.5], [2.0]])  # scale must not matter
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / t)), rel=1e-5)


def test_nt_xent_gradient_reaches_both_views():
    z1, z2 = _t(Z1).requires_grad_(True), _t(Z2).requires_grad_(True)
    nt_xent(z1, z2, 0.5).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_info_nce_matches_the_papers_formula(temperature):
    got = info_nce(_t(Z1), _t(Z2), _t(QUEUE), temperature).item()
    assert got == pytest.approx(_ref_info_nce(Z1, Z2, QUEUE, temperature), rel=1e-5)


def test_info_nce_closed_form_with_a_queue_orthogonal_to_the_queries():
    t = 0.2
    q = torch.tensor([[3.0, 0.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    # the key equals the query's direction: logits [1/T, 0, 0, 0]
    assert info_nce(q, q * 0.5, queue, t).item() == pytest.approx(math.log(1 + 3 * math.exp(-1 / t)), rel=1e-5)
    # the positive is logit 0: the same query with its key among the negatives and an orthogonal key instead
    swapped = info_nce(q, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]]), t).item()
    assert swapped == pytest.approx(math.log(1 + math.exp(1 / t)), rel=1e-5)


@pytest.mark.parametrize("alpha, beta", [(0.1, 1.0), (0.5, 0.3), (1.0, 2.0), (0.3, 0.0)])
def test_infonce_alpha_beta_matches_the_papers_formula(alpha, beta):
    # p, t_same and t_other all different, so a transposed similarity or swapped targets would show
    got = infonce_alpha_beta(_t(Z1), _t(Z3), _t(Z2), alpha, beta).item()
    assert got == pytest.approx(_ref_infonce_ab(Z1, Z3, Z2, alpha, beta), rel=1e-5, abs=1e-6)


def test_infonce_alpha_beta_closed_form_for_orthonormal_embeddings():
    b, alpha, beta = 3, 0.5, 0.7
    e = torch.eye(b)
    # S(v_i, v'_i) = 1; the b - 1 other S(v_i, v'_j) and the b - 1 S(v_i, v_j), j != i, are 0
    expected = 2.0 - beta * 2 * alpha * math.log(math.exp(1 / alpha) + 2 * (b - 1))
    assert infonce_alpha_beta(e, e, e, alpha, beta).item() == pytest.approx(expected, rel=1e-5)


def test_byol_infonce_loss_is_both_directions_and_reduces_to_byols_loss_at_beta_zero():
    p1, t1, p2, t2 = _t(Z1), _t(Z3), _t(Z4), _t(Z2)
    alpha, beta = 0.4, 0.8
    expected = (2 - _ref_infonce_ab(Z1, Z3, Z2, alpha, beta)) + (2 - _ref_infonce_ab(Z4, Z2, Z3, alpha, beta))
    assert byol_infonce_loss(p1, t1, p2, t2, alpha, beta).item() == pytest.approx(expected, rel=1e-5)
    # beta = 0: exactly BYOL's symmetric loss (mean(2 - 2cos) per direction), for any alpha
    for a in (0.1, 1.0):
        assert byol_infonce_loss(p1, t1, p2, t2, a, 0.0).item() == pytest.approx(byol_loss(p1, t2, p2, t1).item(),
                                                                                rel=1e-6)


def test_byol_infonce_loss_with_online_targets_and_no_predictor_is_simclrs_loss():
    # beta = 1, S between online projections (target = theta, no predictor): 4 + 4 alpha NT-Xent
    z1, z2, alpha = _t(Z1), _t(Z2), 0.3
    assert byol_infonce_loss(z1, z1, z2, z2, alpha, 1.0).item() == pytest.approx(
        4 + 4 * alpha * nt_xent(z1, z2, alpha).item(), rel=1e-5)


def test_all_gather_with_grad_is_the_identity_in_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x


def _gather_worker(rank, world, init_file, z1, z2, temperature, out_dir):
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        n = z1.shape[0] // world
        a = z1[rank * n:(rank + 1) * n].clone().requires_grad_(True)
        b = z2[rank * n:(rank + 1) * n].clone().requires_grad_(True)
        loss = nt_xent(all_gather_with_grad(a), all_gather_with_grad(b), temperature)
        loss.backward()
        torch.save({"loss": loss.detach(), "a": a.grad, "b": b.grad}, f"{out_dir}/{rank}.pt")
    finally:
        tdist.destroy_process_group()


def test_nt_xent_over_two_processes_has_the_single_process_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp

    world, t = 2, 0.5
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    # fork: 2 s instead of 20 s of re-importing in spawned children (which set 1 thread first, like DataLoader workers)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_gather_worker, args=(world, str(tmp_path / "init"), z1, z2, t, str(tmp_path)), nprocs=world,
                       start_method=method)
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    full = nt_xent(a, b, t)
    full.backward()
    n = 6 // world
    for rank in range(world):
        out = torch.load(tmp_path / f"{rank}.pt")
        assert out["loss"].item() == pytest.approx(full.item(), rel=1e-6)
        # every process computes the global loss; backward sums the gathered gradients over processes, and
        # DDP's average over processes then gives the single-process gradient
        torch.testing.assert_close(out["a"] / world, a.grad[rank * n:(rank + 1) * n])
        torch.testing.assert_close(out["b"] / world, b.grad[rank * n:(rank + 1) * n])


def test_infonce_alpha_beta_of_one_process_rows_against_the_global_targets():
    """A process's rows (``offset``) against the targets of the whole batch: the mean over the processes is
    the loss of the whole batch (what BYOL's gathered negatives compute under DDP)."""
    g = torch.Generator().manual_seed(3)
    p, t_same, t_other = (torch.randn(6, 4, generator=g) for _ in range(3))
    whole = infonce_alpha_beta(p, t_same, t_other, 0.3, 0.8)
    parts = [infonce_alpha_beta(p[r * 3:(r + 1) * 3], t_same, t_other, 0.3, 0.8, offset=r * 3) for r in (0, 1)]
    assert (parts[0] + parts[1]).item() / 2 == pytest.approx(whole.item(), rel=1e-6)
    # without the offset the second process would take another row as its own image
    wrong = infonce_alpha_beta(p[3:], t_same, t_other, 0.3, 0.8)
    assert wrong.item() != pytest.approx(parts[1].item(), rel=1e-3)

"""Linear evaluation on frozen features: L-BFGS multinomial logistic regression.

This is the paper's *transfer* linear protocol [BYOL App. D.2]: no augmentation, features computed
once, an l2-regularised multinomial logistic regression fitted full-batch with L-BFGS, the
penalty chosen on a held-out validation split and the model refitted on train + validation.

Objective (minimised over ``W [K, D]`` and ``b [K]``, ``n`` training samples)::

    L(W, b) = (1/n) * sum_i CE(W x_i + b, y_i) + (l2 / 2) * ||W||_F^2      (bias not penalised)

scikit-learn's ``LogisticRegression`` (lbfgs, multinomial) minimises
``C * sum_i CE_i + 0.5 * ||W||_F^2``. Dividing by ``C * n`` shows that both have the same minimiser
when::

    l2 = 1 / (C * n)        i.e.        C = 1 / (n * l2)

(``tests/eval/test_eval_linear.py`` checks coefficients and accuracy against scikit-learn.) Because the
loss is a *mean*, a given ``l2`` means the same amount of regularisation whatever the data-set size.

Features are standardised with the mean and standard deviation of the training features (test
features never contribute to any statistic). Constant features (std 0) are only centred.

Speed: one L-BFGS function evaluation is two passes over the features (``X W^T`` and ``R^T X``).
The features are rotated into their PCA basis before fitting (an orthogonal rotation: same logits,
same penalty, same minimiser) so that the per-column preconditioning whitens them: 31-40% fewer
evaluations on raw pixels and encoder features (:func:`pca_basis`). These skinny products do not get
faster with a second thread; :func:`byol.eval.compare.run_side_by_side` runs probes one per core.
Thread policy is left to the caller (``torch.set_num_threads``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from byol.errors import ConfigError, DataError
from byol.eval.splits import stratified_split

__all__ = [
    "DEFAULT_L2_GRID",
    "fit_logistic",
    "linear_eval",
    "paper_grid",
    "pca_basis",
    "predict_logits",
    "standardize",
    "stratified_split",
]

#: Default penalty grid: 6 log-spaced values in [1e-6, 1e-1] (cheap; see :func:`paper_grid`).
DEFAULT_L2_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, -1, 6))


def paper_grid() -> list[float]:
    """The paper's grid: 45 logarithmically spaced values of l2 in [1e-6, 1e5] [BYOL App. D.2]."""
    return [float(v) for v in np.logspace(-6, 5, 45)]


def _as_features(x: Tensor | np.ndarray, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise DataError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise DataError(f"{name} is empty")
    if t.is_inference():  # e.g. computed under torch.inference_mode(): cannot enter autograd
        with torch.inference_mode(False):
            t = t.clone()
    return t.to(device=device, dtype=dtype)


def _as_labels(y: Tensor | np.ndarray, n: int, name: str, device: torch.device) -> Tensor:
    t = torch.as_tensor(y)
    if t.ndim != 1 or t.shape[0] != n:
        raise DataError(f"{name} must be 1-D with {n} entries, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise DataError(f"{name} must hold integer class indices, got {t.dtype}")
    t = t.to(device=device, dtype=torch.int64)
    if n and int(t.min()) < 0:
        raise DataError(f"{name} has negative class indices")
    if t.is_inference():
        with torch.inference_mode(False):
            t = t.clone()
    return t


def standardize(train_x: Tensor, *others: Tensor, eps: float = 1e-8) -> tuple[Tensor, ...]:
    """Standardise ``train_x`` and ``others`` with the per-dimension mean/std of ``train_x`` only."""
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, unbiased=False, keepdim=True)
    std = torch.where(std > eps, std, torch.ones_like(std))  # constant dims: centre only
    return tuple((t - mean) / std for t in (train_x, *others))


#: Features wider than this are not rotated into their PCA basis (the d x d eigendecomposition and
#: the extra copy of the features would cost more than they save; per-column preconditioning stays).
PCA_MAX_DIM = 4096


def pca_basis(train_x: Tensor) -> Tensor | None:
    """Orthonormal ``[D, D]`` eigenvectors of ``train_x.T @ train_x / n`` (``train_x`` centred), or
    ``None`` when ``D > PCA_MAX_DIM``.

    Why: the objective of :func:`fit_logistic` is invariant under an orthogonal rotation of the features
    (``||W Q||_F = ||W||_F``, logits unchanged), so fitting on ``x @ Q`` and mapping ``W`` back gives
    the same minimiser. In that basis the columns are uncorrelated and the per-column preconditioning
    of :func:`fit_logistic` becomes whitening, and L-BFGS needs fewer iterations on correlated features.
    Measured on Fashion-MNIST (default grid + refit, one thread; ``benchmarks/linear_probe.py``): raw
    pixels (60,000 x 784) 1,678 -> 1,159 loss evaluations, top-1 84.70 -> 84.71; a BYOL encoder's 256-d
    features 1,124 -> 669, top-1 88.08 -> 88.24 (benchmarks/RESULTS.md section 15).
    """
    d = train_x.shape[1]
    if d > PCA_MAX_DIM:
        return None
    cov = train_x.t() @ train_x / max(train_x.shape[0], 1)  # in the features' dtype, on their device
    _, q = torch.linalg.eigh(cov.to("cpu", torch.float64))  # small [D, D]: on the CPU, in float64
    return q.to(train_x.device, train_x.dtype)


def _rotate(q: Tensor | None, *xs: Tensor) -> tuple[Tensor, ...]:
    return xs if q is None else tuple(x @ q for x in xs)


def predict_logits(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Logits ``x @ W.T + b`` for ``W [K, D]``, ``b [K]``."""
    return torch.addmm(b.to(x.dtype), x, w.to(x.dtype).t())


def fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2: float,
    *,
    max_iter: int = 300,
    tol: float = 1e-5,
    init: tuple[Tensor, Tensor] | None = None,
    history_size: int = 20,
) -> tuple[Tensor, Tensor]:
    """Minimise mean cross-entropy + ``l2/2 * ||W||^2`` with full-batch L-BFGS (strong Wolfe).

    ``x`` ``[n, D]`` float (its dtype, float32 or float64, is the working precision), ``y`` int64
    ``[n]``. Returns ``(W [K, D], b [K])`` (scikit-learn's ``coef_``/``intercept_`` layout).
    ``max_iter`` caps L-BFGS iterations; it stops earlier when the largest absolute gradient entry
    is ``<= tol`` or the loss stops changing. ``init`` warm-starts from a previous ``(W, b)``.
    The gradient is analytic (no autograd) and ``W`` is diagonally preconditioned for large ``l2``
    (see the comment in the body), which changes the path, not the minimiser. Equivalent to scikit-learn with ``C = 1 / (n * l2)`` (see the module docstring).
    """
    if l2 < 0 or not math.isfinite(l2):
        raise ConfigError(f"l2 must be a finite value >= 0, got {l2}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    x = torch.as_tensor(x)
    x = _as_features(x, "x", x.dtype if x.dtype.is_floating_point else torch.float32, x.device)
    y = _as_labels(y, x.shape[0], "y", x.device)
    if int(y.max()) >= num_classes:
        raise DataError(f"label {int(y.max())} out of range for num_classes={num_classes}")
    n = x.shape[0]
    rows = torch.arange(n, device=x.device)
    # Diagonal preconditioning: L-BFGS optimises V with W = V * s (one s per feature column). The
    # curvature of the loss along column j of W is about c_j + l2 (c_j ~ 0.25 * mean(x_j^2): the data
    # term), along the bias about 0.25. With a large l2 the problem is badly conditioned, the line
    # search takes tiny steps and L-BFGS stops on its step-size test long before the (unpenalised)
    # bias has converged; with columns of very different scale (features in their PCA basis, see
    # :func:`pca_basis`) it needs many more iterations. s_j ~ 1 / sqrt(c_j + l2) brings the curvature
    # along every column of V to one scale. The minimiser is unchanged.
    c = 0.25 * x.pow(2).mean(0)
    s = (0.25 / (c + l2).clamp_min(1e-8)).sqrt()
    with torch.inference_mode(False):
        if init is None:
            v = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
            b = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
        else:
            v = init[0].detach().to(device=x.device, dtype=x.dtype) / s
            b = init[1].detach().to(device=x.device, dtype=x.dtype).clone()
        v.grad = torch.zeros_like(v)
        b.grad = torch.zeros_like(b)
        opt = torch.optim.LBFGS(
            [v, b],
            lr=1.0,
            max_iter=max_iter,
            max_eval=int(max_iter * 1.25) + 1,
            tolerance_grad=tol,
            tolerance_change=torch.finfo(x.dtype).eps * 10,
            history_size=history_size,
            line_search_fn="strong_wolfe",
        )

        @torch.no_grad()
        def closure() -> Tensor:
            # Analytic loss and gradient (no autograd): d/dlogits mean-CE = (softmax - onehot) / n,
            # and grad_W = r.T @ x is much faster than autograd's x.T @ r for a tall, thin x.
            w = v * s
            logp = F.log_softmax(torch.addmm(b, x, w.t()), dim=1)
            loss = -logp[rows, y].mean()
            r = logp.exp_()  # softmax, in place
            r[rows, y] -= 1.0
            r.div_(n)
            torch.mm(r.t(), x, out=v.grad)
            torch.sum(r, dim=0, out=b.grad)
            if l2 > 0:
                loss = loss + 0.5 * l2 * w.pow(2).sum()
                v.grad.add_(w, alpha=l2)
            v.grad.mul_(s)  # chain rule: dL/dV = s * dL/dW
            return loss

        opt.step(closure)
    return (v * s).detach(), b.detach()


def _topk_acc(logits: Tensor, y: Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hit = (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1)
    return 100.0 * hit.double().mean().item()


def _l2_grid(l2_grid: Sequence[float] | None) -> list[float]:
    """The penalties to try, largest first (each fit warm-starts the next)."""
    grid = sorted({float(v) for v in (DEFAULT_L2_GRID if l2_grid is None else l2_grid)}, reverse=True)
    if not grid:
        raise ConfigError("l2_grid is empty")
    if any(v < 0 or not math.isfinite(v) for v in grid):
        raise ConfigError(f"l2_grid values must be finite and >= 0, got {grid}")
    return grid


def _select_l2(
    xtr: Tensor, ytr: Tensor, grid: list[float], num_classes: int, *, val_fraction: float, seed: int,
    max_iter: int, tol: float,
) -> tuple[float, dict[float, float], tuple[Tensor, Tensor]]:
    """Steps 1-3 of :func:`linear_eval`: the penalty with the best validation top-1, the accuracies by
    penalty, and that penalty's solution ``(W, b)`` for standardised (unrotated) features."""
    tr_idx, va_idx = stratified_split(ytr.cpu(), val_fraction, seed)
    if va_idx.numel() == 0:
        raise DataError("too few training samples per class to carve a validation split")
    tr_idx, va_idx = tr_idx.to(xtr.device), va_idx.to(xtr.device)
    a, v = standardize(xtr[tr_idx], xtr[va_idx])
    q = pca_basis(a)
    a, v = _rotate(q, a, v)
    ya, yv = ytr[tr_idx], ytr[va_idx]
    sols: dict[float, tuple[Tensor, Tensor]] = {}
    val_acc: dict[float, float] = {}
    init = None
    for l2 in grid:  # decreasing penalty: each solution is a good start for the next
        init = fit_logistic(a, ya, num_classes, l2, max_iter=max_iter, tol=tol, init=init)
        sols[l2] = init
        val_acc[l2] = _topk_acc(predict_logits(v, *init), yv, 1)
    best = max(grid, key=lambda l: val_acc[l])  # grid is decreasing: ties -> larger penalty
    w, b = sols[best]
    return best, val_acc, (w if q is None else w @ q.t(), b)


def linear_eval(
    train_x: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray,
    test_x: Tensor | np.ndarray,
    test_y: Tensor | np.ndarray,
    *,
    l2_grid: Sequence[float] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-5,
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> dict:
    """Linear probe with l2 selected on a validation split, then refitted on train + val.

    1. Split ``train`` into a class-stratified, ``seed``-ed train/val split (``val_fraction``).
    2. Standardise with the train-part statistics; fit :func:`fit_logistic` for every l2 of
       ``l2_grid`` (default :data:`DEFAULT_L2_GRID`; :func:`paper_grid` is the paper's 45 values),
       from the largest penalty to the smallest, each fit warm-started from the previous solution.
    3. Pick the l2 with the best validation top-1 (ties -> the larger penalty).
    4. Re-standardise with all training statistics, refit on train + val with that l2
       (warm-started), and score the test set.

    A single-value grid skips steps 1-3. Returns ``{"top1", "top5" (only if K >= 5), "l2",
    "val_top1_by_l2", "n_train", "n_test", "num_classes", "dim"}``; accuracies are percentages.
    """
    device = torch.device(device)
    xtr = _as_features(train_x, "train_x", dtype, device)
    xte = _as_features(test_x, "test_x", dtype, device)
    if xtr.shape[1] != xte.shape[1]:
        raise DataError(f"train and test features differ in width: {xtr.shape[1]} vs {xte.shape[1]}")
    ytr = _as_labels(train_y, xtr.shape[0], "train_y", device)
    yte = _as_labels(test_y, xte.shape[0], "test_y", device)
    if num_classes is None:
        num_classes = int(max(ytr.max(), yte.max())) + 1
    elif int(max(ytr.max(), yte.max())) >= num_classes:
        raise DataError(f"labels exceed num_classes={num_classes}")
    if not torch.isfinite(xtr).all() or not torch.isfinite(xte).all():
        raise DataError("features contain NaN or inf")

    grid = _l2_grid(l2_grid)
    val_acc: dict[float, float] = {}
    init = None
    if len(grid) == 1:
        best = grid[0]
    else:
        best, val_acc, init = _select_l2(xtr, ytr, grid, num_classes, val_fraction=val_fraction, seed=seed,
                                         max_iter=max_iter, tol=tol)

    a, t = standardize(xtr, xte)
    q = pca_basis(a)
    a, t = _rotate(q, a, t)
    if init is not None and q is not None:  # the grid's solution, carried into this basis as a warm start
        init = (init[0] @ q, init[1])
    w, b = fit_logistic(a, ytr, num_classes, best, max_iter=max_iter, tol=tol, init=init)
    logits = predict_logits(t, w, b)
    out: dict = {"top1": _topk_acc(logits, yte, 1)}
    if num_classes >= 5:
        out["top5"] = _topk_acc(logits, yte, 5)
    out.update(
        l2=best,
        val_top1_by_l2=val_acc,
        n_train=int(xtr.shape[0]),
        n_test=int(xte.shape[0]),
        num_classes=int(num_classes),
        dim=int(xtr.shape[1]),
    )
    return out

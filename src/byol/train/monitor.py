"""Training monitors: collapse diagnostics on a batch of projections, and the online kNN accuracy.

For ``d``-dimensional l2-normalized projections spread over the sphere, the per-dimension standard
deviation is about ``1/sqrt(d)``; a collapsed representation (every input mapped to the same point)
has std -> 0 and effective rank -> 1 (Jing et al. / Roy & Vetterli's entropy-based effective rank).

A method whose loss is computed on soft assignments (SwAV's codes) can fail in a way the projections do not
show: every image gets the same, uniform code, the swapped prediction carries nothing and the loss sits at
log K while the projections keep their spread (measured: a 10-epoch CIFAR-10 SwAV run whose loss stayed at
log 100 = 4.605 from step 1,550 kept 0.64 of the healthy per-dimension std). Such a method returns the
per-sample normalized entropy of its codes as ``code_entropy``; the monitor reads it as a second signal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from byol.runtime import dist
from byol.eval import extract_features, knn_eval
from byol.losses import l2_normalize

#: Warn when the per-dimension std of normalized projections falls below this fraction of 1/sqrt(d).
COLLAPSE_FRACTION = 0.1
#: Warn when the codes' mean normalized entropy (1 = every code uniform over the K prototypes) exceeds this.
CODE_ENTROPY_LIMIT = 0.99


@torch.no_grad()
def collapse_stats(z: Tensor) -> dict[str, float]:
    """``z_std`` (mean per-dim std of l2-normalized z), ``z_std_ref`` (= 1/sqrt(d)), ``eff_rank``."""
    z = l2_normalize(z.float())
    d = z.shape[1]
    std = z.std(dim=0).mean().item() if z.shape[0] > 1 else 0.0
    return {"z_std": std, "z_std_ref": 1.0 / math.sqrt(d), "eff_rank": _eff_rank(z)}


def _eff_rank(z: Tensor) -> float:
    zc = l2_normalize(z.float())
    s = torch.linalg.svdvals(zc - zc.mean(dim=0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    return math.exp(-(p * torch.log(p.clamp_min(1e-12))).sum().item())


@torch.no_grad()
def dynamics_stats(proj: Tensor, pred: Tensor | None = None, target: Tensor | None = None) -> dict[str, float]:
    """What a predictor method's step looks like beyond collapse, on one batch of view 1 (issue: why BYOL
    learns slowly in short runs; Tian et al. 2021 study these quantities):

    - ``pred_eff_rank``: effective rank of the predictions p = q(z), as ``eff_rank`` is of the projections z;
    - ``pred_cos_proj``: mean cos(p, z): how far the predictor moves the projection (1 = an identity predictor);
    - ``target_cos_proj``: mean cos(t, z), t the target's projection of the same view: how far the target
      lags behind the online network (1 = no lag; a target updated with tau -> 1 drifts below 1).
    Keys appear only for the tensors given (a method without predictor or target returns neither)."""
    out: dict[str, float] = {}
    z = l2_normalize(proj.float())
    if pred is not None:
        out["pred_eff_rank"] = _eff_rank(pred)
        out["pred_cos_proj"] = float((l2_normalize(pred.float()) * z).sum(dim=1).mean())
    if target is not None:
        out["target_cos_proj"] = float((l2_normalize(target.float()) * z).sum(dim=1).mean())
    return out


def step_stats(out: dict[str, Tensor], gather: Callable[[Tensor], Tensor]) -> dict[str, float]:
    """The log's statistics of a step's outputs (the global batch's, through ``gather``): the collapse
    statistics of ``proj``, the dynamics of ``pred`` / ``target`` and the mean ``code_entropy`` when the
    method returns them."""
    proj = gather(out["proj"])
    extra = (gather(out[k]) if k in out else None for k in ("pred", "target"))
    stats = {**collapse_stats(proj), **dynamics_stats(proj, *extra)}
    if "code_entropy" in out:
        stats["code_entropy"] = float(gather(out["code_entropy"].float()).mean())
    return stats


def collapse_reason(stats: dict[str, float], fraction: float = COLLAPSE_FRACTION) -> str | None:
    """Why a monitor reading (a log record with ``z_std``, ``z_std_ref`` and maybe ``code_entropy``) is a
    suspected collapse, with its usual causes; ``None`` when it is not one."""
    if stats["z_std"] < fraction * stats["z_std_ref"]:
        return COLLAPSE_ADVICE.format(**{"eff_rank": float("nan"), **stats})
    if stats.get("code_entropy", 0.0) > CODE_ENTROPY_LIMIT:
        return CODE_COLLAPSE_ADVICE.format(**stats)
    return None


def is_collapsed(stats: dict[str, float], fraction: float = COLLAPSE_FRACTION) -> bool:
    return collapse_reason(stats, fraction) is not None


def tracked_weights(module: nn.Module) -> dict[str, Tensor]:
    """The trained weight matrices / kernels of ``module`` (``dim >= 2``, ``requires_grad``) by layer name
    (``encoder.features.0``): the layers whose update sizes :func:`update_ratios` reports. Biases and BN
    affine parameters are left out: their norms are tiny, so their ratios are noise."""
    return {name.removesuffix(".weight"): p for name, p in module.named_parameters()
            if p.requires_grad and p.dim() >= 2}


@torch.no_grad()
def snapshot(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in weights.items()}


@torch.no_grad()
def update_ratios(before: dict[str, Tensor], weights: dict[str, Tensor]) -> dict[str, float]:
    """``upd/<layer>``: ``||w_after - w_before|| / ||w_before||`` of one optimizer step, per layer.

    The size of a step relative to the weights it changes (what LARS sets per layer to ``eta x lr``):
    a layer whose ratio stays near 0 is not learning, one far above ~1e-2 is being rewritten each step.
    Logged at the log steps to see which layers move in the first epochs of a short run."""
    return {f"upd/{name}": float((weights[name].detach().float() - w0.float()).norm()
                                 / w0.float().norm().clamp_min(1e-12)) for name, w0 in before.items()}


COLLAPSE_ADVICE = (
    "representation collapse suspected: the per-dimension std of the normalized projections is {z_std:.4f} "
    "(healthy is about {z_std_ref:.4f}) and the effective rank is {eff_rank:.1f}. Usual causes: no predictor, "
    "tau_base too low (0 collapses), missing BN in the heads, or an lr far too high for the optimizer "
    "(0.2 is a LARS lr; Adam at that lr collapses)."
)

CODE_COLLAPSE_ADVICE = (
    "code collapse suspected: the codes' mean normalized entropy is {code_entropy:.4f} (1 = uniform over the "
    "prototypes): every image gets the same assignment, so the swapped prediction carries nothing and the loss "
    "sits at log K, although the projections keep a per-dimension std of {z_std:.4f} (healthy is about "
    "{z_std_ref:.4f}). Things to try: another seed, a lower lr, freezing the prototypes for the first epoch "
    "(method.freeze_prototypes_steps), a queue at small batch (method.queue_length)."
)


def labeled_positions(labels: Tensor) -> Tensor:
    """Positions of the images that have a label (``>= 0``): a joined split such as ``train+unlabeled``
    labels its unlabeled images -1, and those are never a kNN bank image or query."""
    return torch.nonzero(torch.as_tensor(labels) >= 0).flatten()


@dataclass
class KnnMonitor:
    """Online kNN accuracy of an encoder: labeled train images as bank, held-out images as queries
    (the engine calls it every ``knn_every`` epochs; labels are never seen by pretraining itself)."""

    bank: Tensor
    bank_labels: Tensor
    queries: Tensor
    query_labels: Tensor
    size: int
    mean: list[float]
    std: list[float]
    k: int
    device: torch.device

    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        """kNN top-1 of ``encoder``; with several processes each extracts the features of its part of the
        bank and the queries, and all of them are gathered (every rank returns the same accuracy)."""
        fb, fq = self._features(encoder, self.bank), self._features(encoder, self.queries)
        res = knn_eval(fb, self.bank_labels, fq, self.query_labels, k=(self.k,))
        return {"knn_top1": float(next(iter(res.values())))}

    def _features(self, encoder: nn.Module, images: Tensor) -> Tensor:
        """The features of ``images``: each rank's part, gathered; fewer images than processes, all on every
        rank (an empty part would make that rank alone fail while the others wait in the gather)."""
        kw = dict(size=self.size, mean=self.mean, std=self.std, device=self.device)
        if len(images) < dist.world_size():
            return extract_features(encoder, images, **kw)
        return dist.gather_rows(extract_features(encoder, images[dist.shard(len(images))], **kw))


def knn_monitor(
    train_images: Tensor, train_labels: Tensor, *, bank: int, queries: int, size: int, mean, std, k: int,
    device: torch.device, seed: int, eval_images: Tensor | None = None, eval_labels: Tensor | None = None,
) -> KnnMonitor:
    """A :class:`KnnMonitor` with ``bank`` seeded random labeled train images as bank and ``queries``
    queries drawn from ``eval_images`` when given, else held out of train (then disjoint from the bank)."""
    g = torch.Generator().manual_seed(seed)
    labeled = labeled_positions(train_labels)
    perm = labeled[torch.randperm(len(labeled), generator=g)]
    if eval_images is None or eval_labels is None:
        nq = min(queries, len(labeled) // 5)
        q_idx, b_idx = perm[:nq].sort().values, perm[nq : nq + bank]
        q_images, q_labels = train_images[q_idx], train_labels[q_idx]
    else:
        q_idx = torch.randperm(len(eval_images), generator=g)[:queries].sort().values
        q_images, q_labels = eval_images[q_idx], eval_labels[q_idx]
        b_idx = perm[:bank]
    b_idx = b_idx.sort().values
    return KnnMonitor(torch.as_tensor(train_images[b_idx]), train_labels[b_idx], torch.as_tensor(q_images), q_labels,
                      size, list(mean), list(std), k, device)

"""lightly's pieces against ours on the same tensors at initialisation (``benchmarks/parity.py --check-pieces``).

Each check feeds one input to both and prints the largest absolute difference of the values and gradients
(float32; differences of ~1e-7 relative are rounding): NT-Xent, BYOL's symmetric loss, the momentum update,
tau's schedule, the heads (equal up to lightly's extra pieces once its weights are ours), and the encoder's
initialisation for one seed (so that a seed's runs of the two implementations start from the same encoder).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from byol.config import MethodConfig, find_preset
from byol.losses import byol_loss, nt_xent
from byol.methods.common import momentum_update, projection_head
from byol.models.factory import build_encoder
from byol.models.heads import MLP
from byol.optim.schedules import target_tau
from byol.train.config import PretrainConfig, build_config

#: the real runs' scale: the folder preset's heads and batch, intel-scenes' 14,034 train images at batch 128
BATCH, STEPS_PER_EPOCH = 128, 14034 // 128


def _value_and_grads(fn: Callable[..., Tensor], xs: list[Tensor]) -> tuple[float, list[Tensor]]:
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    value = fn(*xs)
    value.backward()
    return float(value.detach()), [x.grad for x in xs]


def _gap(a: list[Tensor], b: list[Tensor]) -> float:
    return max(float((x.detach() - y.detach()).abs().max()) for x, y in zip(a, b))


def nt_xent_line(temperature: float, dim: int) -> str:
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(BATCH, dim, generator=g) for _ in range(2)]
    ours, g_ours = _value_and_grads(lambda a, b: nt_xent(a, b, temperature), zs)
    theirs, g_theirs = _value_and_grads(NTXentLoss(temperature=temperature), zs)
    return (f"NT-Xent (T={temperature}, {BATCH} x {dim}): ours {ours:.7f}, lightly NTXentLoss {theirs:.7f}, "
            f"|value gap| {abs(ours - theirs):.2e}, max |grad gap| {_gap(g_ours, g_theirs):.2e} "
            f"(max |grad| {max(float(x.abs().max()) for x in g_ours):.2e})")


def byol_loss_lines(dim: int) -> list[str]:
    from lightly.loss import NegativeCosineSimilarity

    neg = NegativeCosineSimilarity()
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(BATCH, dim, generator=g) for _ in range(4)]  # p1, p2, t1, t2
    ours, g_ours = _value_and_grads(lambda p1, p2, t1, t2: byol_loss(p1, t2, p2, t1), xs)
    theirs, g_theirs = _value_and_grads(lambda p1, p2, t1, t2: 4 + 2 * (neg(p1, t2) + neg(p2, t1)), xs)
    example, g_example = _value_and_grads(lambda p1, p2, t1, t2: 0.5 * (neg(p1, t2) + neg(p2, t1)), xs)
    ratio = float(g_example[0].norm() / g_ours[0].norm())
    return [f"BYOL loss ({BATCH} x {dim}): ours byol_loss {ours:.7f}, 4 + 2 (neg(p1, t2) + neg(p2, t1)) {theirs:.7f}, "
            f"|value gap| {abs(ours - theirs):.2e}, max |grad gap| {_gap(g_ours, g_theirs):.2e}",
            f"  lightly's examples' 0.5 (neg + neg) = {example:.7f}: its gradient is {ratio:.4f} x ours"]


def ema_line(backbone: nn.Module, tau: float, steps: int = 20) -> str:
    """Both updates applied ``steps`` times to copies of the same twin, the online network moving in between."""
    from lightly.models.utils import update_momentum

    online, g = _copy(backbone), torch.Generator().manual_seed(2)
    ours_twin, their_twin = _copy(online), _copy(online)
    with torch.no_grad():
        for _ in range(steps):
            for p in online.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
            momentum_update([(ours_twin, online)], tau)
            update_momentum(online, their_twin, m=tau)
    gap = _gap(list(ours_twin.parameters()), list(their_twin.parameters()))
    moved = _gap(list(ours_twin.parameters()), list(backbone.parameters()))
    return (f"momentum update (tau={tau}, {steps} steps, the folder convnet): max |twin gap| {gap:.2e} "
            f"(the twins moved up to {moved:.2e}); ours lerps, lightly multiplies and adds")


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


def tau_line(tau_base: float, total: int) -> str:
    from lightly.utils.scheduler import cosine_schedule

    gaps = [abs(target_tau(k, total, tau_base) - cosine_schedule(k, total, tau_base, 1.0)) for k in range(total)]
    worst = max(range(total), key=gaps.__getitem__)
    return (f"tau over K={total} steps (tau_base {tau_base}): max |target_tau - cosine_schedule| {gaps[worst]:.2e} at "
            f"step {worst} ({gaps[worst] / (1 - target_tau(worst, total, tau_base)):.1%} of ours' 1 - tau there); "
            f"lightly divides by K - 1 and is 1 from step K - 1, ours approaches 1 at K")


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _adopt(theirs: nn.Module, ours: MLP) -> None:
    """Give lightly's head our weights where they have the same role; its extra last bias is zeroed."""
    lin = [m for m in theirs.modules() if isinstance(m, nn.Linear)]
    bns = [m for m in theirs.modules() if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        lin[0].weight.copy_(ours[0].weight)
        bns[0].weight.copy_(ours[1].weight)
        bns[0].bias.copy_(ours[1].bias)
        lin[1].weight.copy_(ours[3].weight)
        if lin[1].bias is not None:
            lin[1].bias.zero_()


def heads_lines(feat: int, m: MethodConfig, temperature: float) -> list[str]:
    """Our projector and lightly's BYOL and SimCLR projectors at the preset's sizes, on the same features."""
    from lightly.models.modules import BYOLProjectionHead, SimCLRProjectionHead

    hidden, out = m.proj_hidden, m.proj_dim
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(BATCH, feat, generator=g).relu()  # features after a ReLU, as the backbone's
    x2 = x + 0.1 * torch.randn(BATCH, feat, generator=g)  # a "second view"
    lines = []
    for name, ours, theirs in (("BYOL projector", projection_head(feat, m), BYOLProjectionHead(feat, hidden, out)),
                               ("SimCLR projector", projection_head(feat, m), SimCLRProjectionHead(feat, hidden, out))):
        _adopt(theirs, ours)
        with torch.no_grad():
            zo, zt = ours.train()(x), theirs.train()(x)
            loss = nt_xent(zo, ours(x2), temperature), nt_xent(zt, theirs(x2), temperature)
        lines.append(f"{name} {feat}->{hidden}->{out}: ours {_params(ours):,} parameters "
                     f"({_layers(ours)}), lightly {_params(theirs):,} ({_layers(theirs)}); with our weights (an "
                     f"extra bias zeroed) max |output gap| {float((zo - zt).abs().max()):.2e}, "
                     f"NT-Xent (T={temperature}) of two views {loss[0]:.4f} vs {loss[1]:.4f}")
    return lines


def _layers(m: nn.Module) -> str:
    def one(layer: nn.Module) -> str:
        if isinstance(layer, nn.Linear):
            return f"Linear{'+b' if layer.bias is not None else ''}"
        return type(layer).__name__.replace("BatchNorm1d", "BN")
    return " ".join(one(x) for x in m.modules() if not list(x.children()))


def encoder_line(cfg: PretrainConfig, seed: int = 0) -> str:
    """Our BYOL and lightly's (registered by parity.py) built under one seed: the first draws are the encoder's."""
    from byol.methods import build_method
    from byol.methods.registry import config_class

    nets = []
    for name in ("byol", "lightly-byol"):
        section = config_class(name)(proj_hidden=cfg.method.proj_hidden, proj_dim=cfg.method.proj_dim)
        torch.manual_seed(seed)
        nets.append(build_method(section, lambda: build_encoder(cfg.model, 3)).encoder)
    gap = _gap(list(nets[0].state_dict().values()), list(nets[1].state_dict().values()))
    return f"encoder at init, seed {seed}: ours vs lightly-byol's max |weight gap| {gap:.1e} (0: the same network)"


def check_pieces() -> str:
    cfg = build_config(files=[find_preset("folder")])
    m = cfg.method
    temperature = float(build_config(files=[find_preset("simclr-cifar10")]).method.temperature)
    backbone = build_encoder(cfg.model, 3)
    feat = int(backbone.feature_dim)
    lines = [nt_xent_line(temperature, m.proj_dim), *byol_loss_lines(m.proj_dim), ema_line(backbone, m.tau_base),
             tau_line(m.tau_base, 10 * STEPS_PER_EPOCH), *heads_lines(feat, m, temperature), encoder_line(cfg)]
    return "\n".join(lines)

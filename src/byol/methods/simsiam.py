"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"): BYOL without the momentum
encoder. One shared encoder f (backbone + projector), a predictor h on one side and stop-gradient on the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from byol.config import MethodConfig
from byol.config.checks import ranged
from byol.losses import l2_normalize
from byol.methods.registry import BackboneFactory, register


@dataclass
class SimSiamConfig(MethodConfig):
    """``method:`` of a SimSiam run. Defaults are the paper's ImageNet heads (section 3, "Baseline settings").

    ``fixed_predictor_lr``: the predictor's lr is held at the peak lr, never warmed up or decayed (the paper's
    finding, section 4.2, Table 1c: 68.1 against 67.7 with a decayed one); ``optim.predictor_lr_mult`` scales
    it like BYOL's."""

    name: str = "simsiam"
    proj_hidden: int = ranged(2048)  #: projector hidden width (paper: 2048, the ResNet-50's feature width)
    proj_dim: int = ranged(2048)  #: projection size d, the predictor's input and output (paper: 2048)
    #: projector layers, each Linear -> BN (-> ReLU but the last); paper: 3 on ImageNet, 2 on CIFAR (App. D)
    proj_layers: int = ranged(3, 1, low_ok=True)
    pred_hidden: int = ranged(512)  #: the predictor's bottleneck (paper: 512 = d / 4, section 3)
    #: sg(z) on the target side; false: gradients flow through both sides (section 4.1, Figure 2: collapse)
    stop_gradient: bool = True
    fixed_predictor_lr: bool = True  #: the predictor at the peak lr throughout (false: the scheduled lr)


def projector(in_dim: int, c: SimSiamConfig) -> nn.Sequential:
    """``proj_layers`` fully-connected layers, BN on each one including the output, ReLU on all but the last
    (section 3). As in the reference code: no bias before a BN (it would cancel), and the output BN has no
    affine parameters."""
    dims = [in_dim] + [c.proj_hidden] * (c.proj_layers - 1) + [c.proj_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        last = i == len(dims) - 2
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b, affine=not last)]
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def predictor(c: SimSiamConfig) -> nn.Sequential:
    """The bottleneck ``d -> pred_hidden -> d``: BN and ReLU on the hidden layer, none on the output (section 3)."""
    return nn.Sequential(nn.Linear(c.proj_dim, c.pred_hidden, bias=False), nn.BatchNorm1d(c.pred_hidden),
                         nn.ReLU(inplace=True), nn.Linear(c.pred_hidden, c.proj_dim))


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """``D(p, z) = -mean_b cos(p_b, z_b)`` (section 3, Eq. 1), in float32 (autocast activations welcome)."""
    return -(l2_normalize(p.float()) * l2_normalize(z.float())).sum(dim=-1).mean()


def simsiam_loss(p1: Tensor, z2: Tensor, p2: Tensor, z1: Tensor) -> Tensor:
    """The symmetrized ``D(p1, z2) / 2 + D(p2, z1) / 2`` (Eq. 2; range [-1, 1]). The caller applies the
    stop-gradient to ``z1``, ``z2`` (Eq. 3)."""
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


@register("simsiam", config=SimSiamConfig)
class SimSiam(nn.Module):
    """SimSiam over backbones from an injected factory (modules with a ``feature_dim``).

    - One encoder shared by both views, no momentum twin: ``after_step`` has nothing to update, and every
      parameter is trained.
    - Each view gets its own forward pass, so BN statistics are per view, as in the reference code (which
      calls the encoder once per view) and in BYOL.
    - The targets are the projections ``z`` of the same forward pass, detached (``stop_gradient``); with
      ``stop_gradient=False`` the loss is minimized through both sides, which collapses (section 4.1).
    - With several processes nothing is gathered: DDP averages the per-process losses' gradients and the
      BN statistics are cross-replica (``train.sync_bn``, as the reference code's SyncBatchNorm).
    """

    def __init__(self, backbone_factory: BackboneFactory, config: SimSiamConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or SimSiamConfig()  # checked when built (its fields' ranges)
        self.encoder = backbone_factory()
        self.projector = projector(int(self.encoder.feature_dim), c)
        self.predictor = predictor(c)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector, self.predictor]

    def fixed_lr_modules(self) -> list[nn.Module]:
        return [self.predictor] if self.config.fixed_predictor_lr else []

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        z1 = self.projector(self.encoder(view1))
        z2 = self.projector(self.encoder(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = (z1.detach(), z2.detach()) if self.config.stop_gradient else (z1, z2)
        return {"loss": simsiam_loss(p1, t2, p2, t1), "proj": z1.detach()}

    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        return {}

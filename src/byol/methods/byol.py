"""BYOL (Grill et al., 2020): online encoder + projector + predictor, EMA target encoder + projector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from byol.config import MethodConfig
from byol.config.checks import choice, ranged
from byol.errors import ConfigError
from byol.losses import byol_infonce_loss, byol_loss, normalized_mse
from byol.runtime import dist
from byol.methods.common import (decay_field, follow, momentum_twin, projection_head, schedule_field, temperature,
                                 temperature_field)
from byol.methods.directpred import DirectPredictor
from byol.methods.registry import BackboneFactory, register
from byol.models.heads import MLP

#: ``method.target``: the paper's EMA target xi, the online network with stop-gradient sg(theta), or the
#: online network itself theta (gradients flow through both branches): Table 5b and App. I, Table 19.
TARGETS = ("ema", "online-sg", "online")

#: alpha of App. I's InfoNCE_{alpha,beta} when ``method.temperature`` is unset: SimCLR's ImageNet temperature.
DEFAULT_ALPHA = 0.1


@dataclass
class BYOLConfig(MethodConfig):
    """``method:`` of a BYOL run (the heads are :class:`~byol.config.MethodConfig`'s)."""

    name: str = "byol"
    pred_hidden: int = ranged(4096)  #: predictor MLP hidden width (paper: 4096)
    tau_base: float = decay_field(0.996)  #: the target's EMA decay at the start (paper: 0.996)
    target_init: str = choice("random", "random", "copy")  #: the target's own random init, or a copy
    use_predictor: bool = True
    #: "cosine" (tau_base -> 1, the paper's) or "constant" (tau_base throughout; Table 5a's fixed-tau rows)
    tau_schedule: str = schedule_field("cosine")
    #: the target: "ema" (the paper's xi), "online-sg" (the online network with stop-gradient, sg(theta)) or
    #: "online" (theta: gradients flow through the target branch too); Table 5b / App. I, Table 19
    target: str = choice("ema", *TARGETS)
    #: beta, the weight of the negative term of App. I's InfoNCE_{alpha,beta}; 0 = BYOL's loss
    negative_weight: float = ranged(0.0, low_ok=True)
    #: alpha of App. I's InfoNCE_{alpha,beta}; None = DEFAULT_ALPHA
    temperature: float | None = temperature_field()
    #: the predictor: "mlp" (the paper's, trained) or "directpred" (a linear map set from the projections'
    #: correlation, not trained: Tian, Chen & Ganguli 2021; not BYOL's, docs/departures.md)
    predictor: str = choice("mlp", "mlp", "directpred")
    directpred_rho: float = ranged(0.3, 0, 1, low_ok=True)  #: rho of F <- rho F + (1 - rho) E[z z^T] (Eq. 19)
    directpred_eps: float = ranged(0.1, low_ok=True)  #: eps added to every eigenvalue of the predictor (Eq. 18)
    directpred_every: int = ranged(1)  #: optimizer steps between two eigendecompositions of F

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.predictor == "directpred" and not self.use_predictor:
            raise ConfigError("method.predictor=directpred needs method.use_predictor=true "
                              "(false: no predictor at all)")


@register("byol", config=BYOLConfig)
class BYOL(nn.Module):
    """BYOL over backbones from an injected factory (modules with a ``feature_dim``).

    Faithful to the reference implementation:
    - each view gets its own forward pass, so BN statistics are computed per view;
    - the target runs in training mode (batch statistics) and is never given gradients;
    - ``after_step`` applies ``xi <- tau_k xi + (1 - tau_k) theta`` after the optimizer step with the
      cosine schedule of tau, over every parameter.

    ``target_init="random"`` gives the target its own random initialisation (a second call of the
    factory), as the reference code does; ``"copy"`` starts it as a copy of the online network (most
    PyTorch ports do this; the reference code's comment says the choice made no significant difference).

    The paper's ablations (Table 5, App. I / Table 19), all off by default:
    - ``use_predictor=False``: the projection is compared with the target directly;
    - ``tau_schedule="constant"``: tau stays ``tau_base`` (tau = 1 with a random target: a never-updated
      random network; tau = 0: the online weights of the previous step);
    - ``target="online-sg"`` / ``"online"``: no separate target network; the online projections of the
      same forward pass serve as targets, with stop-gradient (sg(theta)) or without (theta);
    - ``negative_weight`` (beta) > 0: App. I's InfoNCE_{alpha,beta} with ``temperature`` alpha
      (:func:`byol.losses.byol_infonce_loss`); beta = 0 is BYOL's loss. Its negatives are the targets of the
      global batch, gathered across processes like SimCLR's projections.

    Not from the BYOL paper: ``predictor="directpred"`` replaces the trained MLP predictor by DirectPred's
    linear map (Tian, Chen & Ganguli 2021), set after each optimizer step from a moving average of the
    online projections' correlation (:class:`~byol.methods.directpred.DirectPredictor`, docs/departures.md).
    """

    #: takes small views (``views.small_crops``): ``forward(view1, view2, *small)``, :meth:`_multi_crop_loss`
    multi_crop = True

    def __init__(self, backbone_factory: BackboneFactory, config: BYOLConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or BYOLConfig()  # checked when built (its fields' ranges and choices)
        self.target_mode = c.target
        self.negative_weight = float(c.negative_weight)
        self.temperature = temperature(c, DEFAULT_ALPHA)
        self.encoder = backbone_factory()
        feat_dim = int(self.encoder.feature_dim)
        self.projector = projection_head(feat_dim, c)
        self.predictor: nn.Module = _predictor(c)
        if self.target_mode == "ema":
            fresh = c.target_init == "random"
            self.target_encoder = momentum_twin(self.encoder, backbone_factory if fresh else None)
            self.target_projector = momentum_twin(self.projector,
                                                  (lambda: projection_head(feat_dim, c)) if fresh else None)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector, self.predictor]

    def _targets(self, view1: Tensor, view2: Tensor, z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        """The target projections of both views: xi's (no graph), sg(theta)'s or theta's (``z1``, ``z2``)."""
        if self.target_mode == "online":
            return z1, z2
        if self.target_mode == "online-sg":
            return z1.detach(), z2.detach()
        with torch.no_grad():
            t1 = self.target_projector(self.target_encoder(view1))
            t2 = self.target_projector(self.target_encoder(view2))
        return t1.detach(), t2.detach()

    def forward(self, view1: Tensor, view2: Tensor, *small: Tensor) -> dict[str, Tensor]:
        z1 = self.projector(self.encoder(view1))
        z2 = self.projector(self.encoder(view2))
        if isinstance(self.predictor, DirectPredictor) and self.training:
            self.predictor.observe(z1, z2)  # F's batch term: the two global views' projections
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self._targets(view1, view2, z1, z2)
        # pred / target of view 1: the loop's dynamics diagnostics (byol.train.monitor.dynamics_stats)
        seen = {"proj": z1.detach(), "pred": p1.detach(), "target": t1.detach()}
        if small:
            return {"loss": self._multi_crop_loss(p1, p2, t1, t2, small), **seen}
        if self.negative_weight == 0.0:
            loss = byol_loss(p1, t2, p2, t1)
        else:  # negatives from the global batch, as SimCLR's: the targets of every process (with their gradients)
            t1, t2 = dist.all_gather_with_grad(t1), dist.all_gather_with_grad(t2)
            loss = byol_infonce_loss(p1, t1, p2, t2, self.temperature, self.negative_weight,
                                     offset=dist.rank() * p1.shape[0])
        return {"loss": loss, **seen}

    def _multi_crop_loss(self, p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor, small: tuple[Tensor, ...]) -> Tensor:
        """BYOL with multi-crop views. A departure from the BYOL paper, which has no multi-crop (SwAV's, Caron
        et al. 2020, section 3.2; docs/departures.md): the targets come from the two global views only (no
        target pass on a small view); each small view's online prediction is regressed onto both global
        targets and each global prediction onto the other global target. The loss is the mean over these
        ``2 + 2 len(small)`` pairs, times 2 so that without small views it equals :func:`byol_loss` (the sum
        of the two symmetric terms)."""
        if self.negative_weight != 0.0:
            raise ConfigError("method.negative_weight > 0 takes no small views: set views.small_crops=0")
        preds = [self.predictor(self.projector(self.encoder(v))) for v in small]
        pairs = [(p1, t2), (p2, t1)] + [(p, t) for p in preds for t in (t1, t2)]
        return 2.0 * torch.stack([normalized_mse(p, t).mean() for p, t in pairs]).mean()

    @torch.no_grad()
    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        if isinstance(self.predictor, DirectPredictor):
            self.predictor.update()  # F from this step's projections, W every method.directpred_every steps
        if self.target_mode != "ema":
            return {}
        return follow([(self.target_encoder, self.encoder), (self.target_projector, self.projector)], step,
                      total_steps, self.config)


def _predictor(c: BYOLConfig) -> nn.Module:
    """The paper's MLP predictor, none (``use_predictor=False``), or DirectPred's (a departure from BYOL: a
    linear map set from the projections' correlation instead of trained, :mod:`byol.methods.directpred`)."""
    if not c.use_predictor:
        return nn.Identity()
    if c.predictor == "directpred":
        return DirectPredictor(c.proj_dim, c.directpred_rho, c.directpred_eps, c.directpred_every)
    return MLP(c.proj_dim, c.pred_hidden, c.proj_dim)

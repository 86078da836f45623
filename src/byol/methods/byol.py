"""BYOL (Grill et al., 2020): online encoder + projector + predictor, EMA target encoder + projector."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from byol.config import MethodConfig
from byol.errors import ConfigError
from byol.losses import byol_loss
from byol.methods.registry import BackboneFactory, register
from byol.models.heads import MLP, ema_update
from byol.schedules import target_tau


@register("byol")
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
    ``use_predictor=False`` and ``tau_base`` exist for the paper's ablations (Table 5).
    """

    def __init__(self, backbone_factory: BackboneFactory, config: MethodConfig | None = None) -> None:
        super().__init__()
        c = config or MethodConfig()
        self.encoder = backbone_factory()
        feat_dim = int(self.encoder.feature_dim)
        self.projector = MLP(feat_dim, c.proj_hidden, c.proj_dim)
        self.predictor: nn.Module = MLP(c.proj_dim, c.pred_hidden, c.proj_dim) if c.use_predictor else nn.Identity()
        self.tau_base = c.tau_base
        if c.target_init == "copy":
            self.target_encoder = copy.deepcopy(self.encoder)
            self.target_projector = copy.deepcopy(self.projector)
        elif c.target_init == "random":
            self.target_encoder = backbone_factory()
            self.target_projector = MLP(feat_dim, c.proj_hidden, c.proj_dim)
        else:
            raise ConfigError(f"method.target_init must be 'random' or 'copy', got {c.target_init!r}")
        for p in self._target_params():
            p.requires_grad_(False)

    def _target_params(self):
        yield from self.target_encoder.parameters()
        yield from self.target_projector.parameters()

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector, self.predictor]

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        z1 = self.projector(self.encoder(view1))
        z2 = self.projector(self.encoder(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1 = self.target_projector(self.target_encoder(view1))
            t2 = self.target_projector(self.target_encoder(view2))
        loss = byol_loss(p1, t2.detach(), p2, t1.detach())
        return {"loss": loss, "proj": z1.detach()}

    @torch.no_grad()
    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        tau = target_tau(step, total_steps, self.tau_base)
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)
        return {"tau": tau}

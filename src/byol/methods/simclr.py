"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from byol.config import MethodConfig
from byol.runtime.dist import all_gather_with_grad
from byol.losses import nt_xent
from byol.methods.common import projection_head, temperature, temperature_field
from byol.methods.registry import BackboneFactory, register

#: SimCLR's temperature for its ImageNet recipe (LARS, lr 0.3 x B/256, batch 4096; Chen et al. 2020,
#: section 5.1, Table 5); 0.5 is its choice on CIFAR-10 (App. B.9), used by configs/simclr-cifar10.yaml.
PUBLISHED_TEMPERATURE = 0.1


@dataclass
class SimCLRConfig(MethodConfig):
    """``method:`` of a SimCLR run (the heads are :class:`~byol.config.MethodConfig`'s)."""

    name: str = "simclr"
    temperature: float | None = temperature_field()  #: None = PUBLISHED_TEMPERATURE (0.1, ImageNet)


@register("simclr", config=SimCLRConfig)
class SimCLR(nn.Module):
    """SimCLR: encoder + projector, NT-Xent over the 2N views of the batch.

    - Both views go through the encoder in *one* forward pass (BN statistics over all 2N views), as in
      SimCLR's reference code; with one process this is SimCLR's global BN exactly.
    - The negatives of each anchor are the other 2N - 2 projections of the global batch: the projections
      are gathered across processes with gradients (:func:`byol.runtime.dist.all_gather_with_grad`, the identity
      with one process) and every process computes the same global loss.
    - No target network: ``after_step`` has nothing to update.
    """

    def __init__(self, backbone_factory: BackboneFactory, config: SimCLRConfig | None = None) -> None:
        super().__init__()
        c = config or SimCLRConfig()
        self.temperature = temperature(c, PUBLISHED_TEMPERATURE)
        self.encoder = backbone_factory()
        self.projector = projection_head(int(self.encoder.feature_dim), c)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.encoder, self.projector]

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        n = view1.shape[0]
        z = self.projector(self.encoder(torch.cat([view1, view2])))
        z1, z2 = z[:n], z[n:]
        loss = nt_xent(all_gather_with_grad(z1), all_gather_with_grad(z2), self.temperature)
        return {"loss": loss, "proj": z1.detach()}

    def after_step(self, step: float, total_steps: int) -> dict[str, float]:
        return {}

"""SimCLR: NT-Xent over the 2N views of one BN batch, against an independent NumPy formula."""

import copy

import numpy as np
import pytest
import torch

from byol.methods import SimCLRConfig
from byol.errors import ConfigError
from byol.methods import METHODS, SimCLR, build_method
from byol.models import build_backbone


def _simclr(**kw):
    torch.manual_seed(0)
    mk = lambda: build_backbone("convnet", in_channels=1, widths=[4, 8])  # noqa: E731
    return build_method(SimCLRConfig(**{"name": "simclr", "proj_hidden": 16, "proj_dim": 8, **kw}), mk)


def _np_nt_xent(z1, z2, t):
    """Cross-entropy of each of the 2N rows of the cosine matrix (its diagonal removed) against its twin."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    logits = z @ z.T / t
    losses = []
    for a in range(n2):
        twin = (a + n2 // 2) % n2
        others = np.delete(logits[a], a)
        losses.append(np.log(np.exp(others).sum()) - logits[a, twin])
    return float(np.mean(losses))


@pytest.mark.parametrize("temperature, expected_t", [(None, 0.1), (0.5, 0.5)])
def test_loss_is_nt_xent_over_one_bn_batch_of_both_views(temperature, expected_t):
    m = _simclr(temperature=temperature)
    assert isinstance(m, SimCLR) and METHODS["simclr"] is SimCLR and m.temperature == expected_t
    ref = copy.deepcopy(m)
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g)
    out = m(v1, v2)
    with torch.no_grad():
        z = ref.projector(ref.encoder(torch.cat([v1, v2])))
        per_view = ref.projector(ref.encoder(v1))
    assert out["loss"].item() == pytest.approx(_np_nt_xent(z[:5].numpy(), z[5:].numpy(), expected_t), rel=1e-5)
    torch.testing.assert_close(out["proj"], z[:5])
    assert not torch.allclose(per_view, z[:5], atol=1e-4)  # BN statistics are over the 2N views


def test_everything_trains_and_nothing_follows_by_momentum():
    m = _simclr()
    trained = {id(p) for mod in m.trainable_modules() for p in mod.parameters()}
    assert trained == {id(p) for p in m.parameters()}
    m(torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8))["loss"].backward()
    assert all(p.grad is not None for p in m.encoder.parameters())
    assert m.after_step(0, 10) == {}


def test_bad_temperature_is_a_config_error():
    with pytest.raises(ConfigError, match="method.temperature"):
        _simclr(temperature=0.0)

"""byol: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020) for practitioners."""

__version__ = "0.1.0"

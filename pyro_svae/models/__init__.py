"""VAE models and guides written as plain Pyro functions."""

from .flow_vae import FlowVAE
from .vae import LIKELIHOODS, VAE

__all__ = ["LIKELIHOODS", "VAE", "FlowVAE"]

"""VAE models and guides written as plain Pyro functions."""

from .vae import LIKELIHOODS, VAE

__all__ = ["LIKELIHOODS", "VAE"]

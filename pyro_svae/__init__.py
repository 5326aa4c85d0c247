"""Hyperspherical variational autoencoders written the Pyro way."""

__version__ = "0.1.0.dev0"

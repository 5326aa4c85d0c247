"""Distributions on spheres, as Pyro ``TorchDistribution`` subclasses with registered KLs."""

from . import kl as _kl  # noqa: F401  (registers the KL divergences)
from .diffusion import SphericalDiffusion
from .hyperspherical_uniform import HypersphericalUniform
from .power_spherical import PowerSpherical
from .product import ProductSphere, ProductSphereConstraint
from .von_mises_fisher import VonMisesFisher

__all__ = [
    "HypersphericalUniform",
    "PowerSpherical",
    "ProductSphere",
    "ProductSphereConstraint",
    "SphericalDiffusion",
    "VonMisesFisher",
]

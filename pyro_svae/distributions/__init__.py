"""Distributions on spheres, as Pyro ``TorchDistribution`` subclasses with registered KLs, and the
discretised logistic likelihood for grey images."""

from . import kl as _kl  # noqa: F401  (registers the KL divergences)
from .diffusion import SphericalDiffusion
from .discretized_logistic import DiscretizedLogistic
from .hyperspherical_uniform import HypersphericalUniform
from .orthogonal_flow import OrthogonalFlowDistribution
from .power_spherical import PowerSpherical
from .product import ProductSphere, ProductSphereConstraint
from .von_mises_fisher import VonMisesFisher

__all__ = [
    "DiscretizedLogistic",
    "HypersphericalUniform",
    "OrthogonalFlowDistribution",
    "PowerSpherical",
    "ProductSphere",
    "ProductSphereConstraint",
    "SphericalDiffusion",
    "VonMisesFisher",
]

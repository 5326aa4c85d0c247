r"""Closed-form KL divergences between sphere distributions, registered with ``torch.distributions``.

Each ``_kl_<p>_<q>`` returns exactly the broadcast ``batch_shape`` of ``p`` and ``q`` and raises
``ValueError`` when the two live on spheres of different dimension. Registration makes them available to
``torch.distributions.kl_divergence``, ``pyro.distributions.kl_divergence`` and so to
``pyro.infer.TraceMeanField_ELBO`` (also through ``.to_event`` and ``pyro.plate``, since every class here
implements ``expand``).

A Householder-flow posterior (:class:`~pyro_svae.distributions.orthogonal_flow.OrthogonalFlowDistribution`)
has its base's KL to the uniform and to a zero-mean isotropic Gaussian (``Normal(0, c).to_event(1)`` or
``MultivariateNormal(0, c² I)``); to any other Gaussian its KL
raises ``NotImplementedError``, so that ELBOs fall back to Monte Carlo.

Not registered, because no closed form exists: PS‖PS and vMF‖PS (they need
:math:`\mathbb{E}_p[\log(1 + \mu_q^\top z)]` for :math:`\mu_q \ne \mu_p`). ELBOs fall back to Monte Carlo.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import (
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
    register_kl,
)

from pyro_svae.ops import log_sphere_area, log_vmf_partition, vmf_mean_resultant

from .diffusion import SphericalDiffusion
from .hyperspherical_uniform import HypersphericalUniform
from .orthogonal_flow import OrthogonalFlowDistribution
from .power_spherical import PowerSpherical
from .von_mises_fisher import VonMisesFisher

__all__: list[str] = []


def _check_same_dim(p, q) -> torch.Size:
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL between distributions on different spheres: {type(p).__name__} has event shape "
            f"{tuple(p.event_shape)}, {type(q).__name__} has {tuple(q.event_shape)}"
        )
    return torch.broadcast_shapes(p.batch_shape, q.batch_shape)


def _expand(value: Tensor, batch_shape: torch.Size) -> Tensor:
    return value.expand(batch_shape) if value.shape != batch_shape else value


@register_kl(HypersphericalUniform, HypersphericalUniform)
def _kl_uniform_uniform(p: HypersphericalUniform, q: HypersphericalUniform) -> Tensor:
    batch_shape = _check_same_dim(p, q)
    return torch.zeros(batch_shape, dtype=p.dtype, device=p.device)


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p: VonMisesFisher, q: HypersphericalUniform) -> Tensor:
    batch_shape = _check_same_dim(p, q)
    return _expand(p.kl_to_uniform(), batch_shape)


@register_kl(SphericalDiffusion, HypersphericalUniform)
def _kl_sphericaldiffusion_uniform(p: SphericalDiffusion, q: HypersphericalUniform) -> Tensor:
    """Exact KL of the heat kernel to the uniform (see :meth:`SphericalDiffusion.kl_to_uniform`)."""
    batch_shape = _check_same_dim(p, q)
    return _expand(p.kl_to_uniform(), batch_shape)


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_powerspherical_uniform(p: PowerSpherical, q: HypersphericalUniform) -> Tensor:
    batch_shape = _check_same_dim(p, q)
    return _expand(p.kl_to_uniform(), batch_shape)


def _expected_log_vmf(mean: Tensor, q: VonMisesFisher) -> Tensor:
    r""":math:`\mathbb{E}_p[\log q(z)]` for a vMF ``q``, given :math:`\mathbb{E}_p[z]` (float64)."""
    kappa_q = q.concentration.to(torch.float64)
    cosine = (mean.to(torch.float64) * q.loc.to(torch.float64)).sum(-1)
    return kappa_q * cosine - log_vmf_partition(q.dim, kappa_q) - log_sphere_area(q.dim)


@register_kl(VonMisesFisher, VonMisesFisher)
def _kl_vmf_vmf(p: VonMisesFisher, q: VonMisesFisher) -> Tensor:
    batch_shape = _check_same_dim(p, q)
    kappa_p = p.concentration.to(torch.float64)
    mean_p = vmf_mean_resultant(p.dim, kappa_p).unsqueeze(-1) * p.loc.to(torch.float64)
    # E_p[log p] = -H(p) = KL(p || U) - log|S^{m-1}|
    kl = p._kl_to_uniform64() - log_sphere_area(p.dim) - _expected_log_vmf(mean_p, q)
    return _expand(kl.to(p.concentration.dtype), batch_shape)


@register_kl(PowerSpherical, VonMisesFisher)
def _kl_powerspherical_vmf(p: PowerSpherical, q: VonMisesFisher) -> Tensor:
    batch_shape = _check_same_dim(p, q)
    kappa_p = p.concentration.to(torch.float64)
    mean_p = (kappa_p / (p.dim - 1 + kappa_p)).unsqueeze(-1) * p.loc.to(torch.float64)
    kl = -p._entropy64() - _expected_log_vmf(mean_p, q)
    return _expand(kl.to(p.concentration.dtype), batch_shape)


@register_kl(OrthogonalFlowDistribution, HypersphericalUniform)
def _kl_orthogonalflow_uniform(p: OrthogonalFlowDistribution, q: HypersphericalUniform) -> Tensor:
    """Reflections preserve the uniform distribution: the KL is the base's."""
    batch_shape = _check_same_dim(p, q)
    return _expand(kl_divergence(p.base_dist, q), batch_shape)


def _base_kl_if_isotropic(p: OrthogonalFlowDistribution, q, isotropic: Tensor) -> Tensor:
    """The base's KL when the Gaussian prior ``q`` is zero-mean and isotropic (``isotropic``, a
    boolean tensor: reading it costs one device synchronisation); ``NotImplementedError`` otherwise,
    so that ELBOs fall back to Monte Carlo."""
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL between distributions of different event shapes: {type(p).__name__} has "
            f"{tuple(p.event_shape)}, {type(q).__name__} has {tuple(q.event_shape)}"
        )
    if not bool(isotropic):
        raise NotImplementedError(
            "closed-form KL of a Householder flow only to a zero-mean isotropic Gaussian prior"
        )
    batch_shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return _expand(kl_divergence(p.base_dist, q), batch_shape)


@register_kl(OrthogonalFlowDistribution, Independent)
def _kl_orthogonalflow_independent(p: OrthogonalFlowDistribution, q: Independent) -> Tensor:
    """Reflections preserve a zero-mean isotropic Gaussian ``Normal(0, c).to_event(1)``: the KL is the
    base's."""
    prior = q.base_dist
    if not (isinstance(prior, Normal) and q.reinterpreted_batch_ndims == 1):
        raise NotImplementedError(
            "closed-form KL of a Householder flow only to a Normal(0, c).to_event(1) prior"
        )
    isotropic = (prior.loc == 0).all() & (prior.scale == prior.scale.reshape(-1)[0]).all()
    return _base_kl_if_isotropic(p, q, isotropic)


@register_kl(OrthogonalFlowDistribution, MultivariateNormal)
def _kl_orthogonalflow_multivariatenormal(
    p: OrthogonalFlowDistribution, q: MultivariateNormal
) -> Tensor:
    """Reflections preserve a zero-mean isotropic ``MultivariateNormal(0, c² I)``: the KL is the
    base's (a full-covariance Gaussian base, for instance)."""
    diagonal = q.scale_tril.diagonal(dim1=-2, dim2=-1)
    isotropic = (
        (q.loc == 0).all()
        & (q.scale_tril == torch.diag_embed(diagonal)).all()
        & (diagonal == diagonal.reshape(-1)[0]).all()
    )
    return _base_kl_if_isotropic(p, q, isotropic)

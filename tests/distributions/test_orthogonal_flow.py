"""Householder-flow posteriors: the closed-form KL to rotation-invariant priors, its fallback, shapes
inside plates, and its use by FlowVAE and the ELBO."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.distributions.transforms.householder import ConditionedHouseholder
from torch.distributions import kl_divergence
from torch.nn.functional import normalize

from pyro_svae.distributions import (
    HypersphericalUniform,
    OrthogonalFlowDistribution,
    PowerSpherical,
    VonMisesFisher,
)
from pyro_svae.flows import SphereHouseholder
from pyro_svae.infer import AnnealedELBO
from pyro_svae.models.flow_vae import FlowVAE


def _gaussian_flow(batch: int, dim: int, steps: int, seed: int) -> OrthogonalFlowDistribution:
    """A diagonal Gaussian with a per-point (amortized-like) product of ``steps`` reflections."""
    g = torch.Generator().manual_seed(seed)
    loc = 2.0 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    scale = 0.2 + torch.rand(batch, dim, generator=g, dtype=torch.float64)
    normals = torch.randn(steps, batch, dim, generator=g, dtype=torch.float64)
    reflections = [ConditionedHouseholder(u) for u in normals]
    return OrthogonalFlowDistribution(dist.Normal(loc, scale).to_event(1), reflections)


def _sphere_flow(base_cls, batch: int, dim: int, seed: int) -> OrthogonalFlowDistribution:
    g = torch.Generator().manual_seed(seed)
    loc = normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1)
    kappa = 1.0 + 20.0 * torch.rand(batch, generator=g, dtype=torch.float64)
    normals = torch.randn(batch, 3, dim, generator=g, dtype=torch.float64)  # 3 reflections each
    return OrthogonalFlowDistribution(base_cls(loc, kappa), SphereHouseholder(normals))


def _monte_carlo_kl(p, q, n: int):
    z = p.sample((n,))
    log_ratio = p.log_prob(z) - q.log_prob(z)
    return log_ratio.mean(0), log_ratio.std(0) / n**0.5


@pytest.mark.parametrize("dim", [2, 5, 40])
@pytest.mark.parametrize("prior_scale", [1.0, 2.5])
def test_gaussian_flow_kl_matches_monte_carlo(dim, prior_scale):
    """The closed form (the base's KL) is within 4 standard errors of E_q[log q(z_K) - log p(z_K)],
    whose log q includes the reflections; fixed seed, so a failure is a change of the estimate, not
    chance (4 standard errors for each of 4 points: false-failure rate about 3e-4); 50000 samples."""
    torch.manual_seed(dim)
    q = _gaussian_flow(4, dim, steps=5, seed=dim)
    prior = dist.Normal(torch.zeros(dim, dtype=torch.float64), prior_scale).to_event(1)
    kl = kl_divergence(q, prior)
    assert kl.shape == (4,)
    assert torch.equal(kl, kl_divergence(q.base_dist, prior))
    estimate, stderr = _monte_carlo_kl(q, prior, 50000)
    assert ((kl - estimate).abs() <= 4 * stderr).all(), (kl, estimate, stderr)


def test_full_covariance_flow_kl_to_isotropic_multivariate_normal_matches_monte_carlo():
    """A full-covariance Gaussian base and an ``MultivariateNormal(0, c^2 I)`` prior (``covariance=
    "full"`` in the models); 4 standard errors as above."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    dim = 6
    loc = torch.randn(4, dim, generator=g, dtype=torch.float64)
    factor = torch.randn(4, dim, dim, generator=g, dtype=torch.float64).tril(-1) * 0.3
    tril = factor + torch.diag_embed(0.3 + torch.rand(4, dim, generator=g, dtype=torch.float64))
    normals = torch.randn(3, 4, dim, generator=g, dtype=torch.float64)
    q = OrthogonalFlowDistribution(
        dist.MultivariateNormal(loc, scale_tril=tril), [ConditionedHouseholder(u) for u in normals]
    )
    prior = dist.MultivariateNormal(
        torch.zeros(dim, dtype=torch.float64), scale_tril=1.5 * torch.eye(dim, dtype=torch.float64)
    )
    kl = kl_divergence(q, prior)
    assert kl.shape == (4,)
    estimate, stderr = _monte_carlo_kl(q, prior, 50000)
    assert ((kl - estimate).abs() <= 4 * stderr).all(), (kl, estimate, stderr)
    correlated = dist.MultivariateNormal(
        torch.zeros(dim, dtype=torch.float64),
        scale_tril=torch.eye(dim, dtype=torch.float64) + 0.5 * torch.ones(dim, dim).tril(-1),
    )
    with pytest.raises(NotImplementedError):
        kl_divergence(q, correlated)


@pytest.mark.parametrize("base_cls", [VonMisesFisher, PowerSpherical])
@pytest.mark.parametrize("dim", [3, 10])
def test_sphere_flow_kl_to_uniform_matches_monte_carlo(base_cls, dim):
    """Same as above on the sphere: reflections preserve the uniform distribution."""
    torch.manual_seed(dim)
    q = _sphere_flow(base_cls, 4, dim, seed=dim)
    prior = HypersphericalUniform(dim, dtype=torch.float64)
    kl = kl_divergence(q, prior)
    assert kl.shape == (4,)
    assert torch.allclose(kl, kl_divergence(q.base_dist, prior))
    estimate, stderr = _monte_carlo_kl(q, prior, 50000)
    assert ((kl - estimate).abs() <= 4 * stderr).all(), (kl, estimate, stderr)


@pytest.mark.parametrize(
    "prior",
    [
        dist.Normal(torch.tensor([0.5, 0.0, 0.0]), 1.0).to_event(1),  # non-zero mean
        dist.Normal(torch.zeros(3), torch.tensor([1.0, 2.0, 1.0])).to_event(1),  # unequal scales
        dist.Laplace(torch.zeros(3), 1.0).to_event(1),
    ],
    ids=["shifted", "anisotropic", "laplace"],
)
def test_no_closed_form_for_priors_that_reflections_move(prior):
    """Such priors have no closed form here, and the ELBO's ``kl="auto"`` falls back to Monte Carlo."""
    q = OrthogonalFlowDistribution(
        dist.Normal(torch.zeros(3), 0.5).to_event(1), T.Householder(3, count_transforms=2)
    )
    with pytest.raises(NotImplementedError):
        kl_divergence(q, prior)

    def model():
        pyro.sample("z", prior)

    def guide():
        pyro.sample("z", q)

    assert torch.isfinite(torch.tensor(AnnealedELBO(kl="auto").loss(model, guide)))
    with pytest.raises(NotImplementedError, match="no closed-form KL for site 'z'"):
        AnnealedELBO(kl="analytic").loss(model, guide)


@pytest.mark.parametrize(
    "prior",
    [
        dist.Normal(torch.zeros(4), 1.0).to_event(1),
        dist.MultivariateNormal(torch.zeros(4), scale_tril=torch.eye(4)),
    ],
    ids=["normal", "multivariate-normal"],
)
def test_kl_to_a_prior_of_another_dimension_raises(prior):
    q = OrthogonalFlowDistribution(
        dist.Normal(torch.zeros(3), 0.5).to_event(1), T.Householder(3, count_transforms=2)
    )
    with pytest.raises(ValueError, match=r"different event shapes.*\(3,\).*\(4,\)"):
        kl_divergence(q, prior)


def test_rejects_transforms_that_are_not_reflections():
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    with pytest.raises(ValueError, match=r"expects Householder reflections.*got Planar"):
        OrthogonalFlowDistribution(base, [T.Householder(3), T.Planar(3)])


def test_expand_and_plate_keep_the_class_and_the_kl():
    """Inside a plate the site's distribution stays an OrthogonalFlowDistribution (not an
    ExpandedDistribution), so the registered KL is found; its shape is the plate's batch shape."""
    q = OrthogonalFlowDistribution(
        dist.Normal(torch.zeros(4), 0.5).to_event(1), T.Householder(4, count_transforms=3)
    )
    expanded = q.expand((6,))
    assert type(expanded) is OrthogonalFlowDistribution
    assert expanded.batch_shape == (6,)
    assert expanded.event_shape == (4,)
    prior = dist.Normal(torch.zeros(4), 1.0).to_event(1)

    def guide():
        with pyro.plate("data", 6):
            pyro.sample("z", q)

    trace = pyro.poutine.trace(guide).get_trace()
    fn = trace.nodes["z"]["fn"]
    assert type(fn) is OrthogonalFlowDistribution
    kl = kl_divergence(fn, prior.expand((6,)))
    assert kl.shape == (6,)
    assert torch.allclose(kl, kl_divergence(q.base_dist, prior).expand(6))


@pytest.mark.parametrize(
    ("latent", "covariance"),
    [("normal:6", "diag"), ("normal:6", "full"), ("vmf:4", "diag"), ("vmf:2,2", "diag")],
)
@pytest.mark.parametrize("flow_type", ["static", "amortized"])
def test_flow_vae_uses_the_closed_form_for_householder_flows(latent, covariance, flow_type):
    """FlowVAE gives Householder-only groups the closed-form KL: the ELBO with ``kl="auto"`` then has
    no Monte Carlo KL noise, and agrees with the Monte Carlo ELBO; other flows stay Monte Carlo."""
    pyro.set_rng_seed(0)
    x = torch.bernoulli(torch.rand(8, 20))
    vae = FlowVAE(
        latent, 20, flow="householder:3", flow_type=flow_type, hidden=(16,), covariance=covariance
    )
    assert all(type(q) is OrthogonalFlowDistribution for q in vae.posteriors(x))
    kls = []
    for kl in ("auto", "mc"):
        elbo = AnnealedELBO(max_plate_nesting=vae.max_plate_nesting, kl=kl)
        pyro.set_rng_seed(1)
        with torch.no_grad():
            terms = [elbo.loss(vae.model, vae.guide, x) for _ in range(100)]
        kls.append(torch.tensor(terms))
    closed, monte_carlo = kls
    # same mean within 4 standard errors; the closed form removes the KL's share of the variance
    gap = (closed.mean() - monte_carlo.mean()).abs()
    assert gap <= 4 * (closed.var() / 100 + monte_carlo.var() / 100).sqrt(), gap
    assert closed.var() < monte_carlo.var()
    planar = FlowVAE("normal:6", 20, flow="planar:2", flow_type=flow_type, hidden=(16,))
    assert all(type(q) is dist.TransformedDistribution for q in planar.posteriors(x))

"""Closed-form KLs: against Monte Carlo, mpmath at the extremes, shapes and dimension checks."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from torch.distributions import kl_divergence
from torch.nn.functional import normalize

from pyro_svae.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher


def _params(batch: int, dim: int, low: float, high: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    loc = normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1)
    kappa = low + (high - low) * torch.rand(batch, generator=g, dtype=torch.float64)
    return loc, kappa


PAIRS = [
    pytest.param(VonMisesFisher, VonMisesFisher, id="vmf-vmf"),
    pytest.param(PowerSpherical, VonMisesFisher, id="ps-vmf"),
]


@pytest.mark.parametrize(("p_cls", "q_cls"), PAIRS)
@pytest.mark.parametrize("dim", [2, 3, 8])
def test_kl_matches_monte_carlo(p_cls, q_cls, dim):
    """Analytic KL within 4 standard errors of E_p[log p - log q] (fixed seed)."""
    torch.manual_seed(dim)
    p = p_cls(*_params(4, dim, 1.0, 20.0, seed=1))
    q = q_cls(*_params(4, dim, 0.5, 5.0, seed=2))
    kl = kl_divergence(p, q)
    assert kl.shape == (4,)
    assert (kl >= 0).all()
    n = 100000
    z = p.sample((n,))
    log_ratio = p.log_prob(z) - q.log_prob(z)
    se = log_ratio.std(0) / math.sqrt(n)
    assert ((log_ratio.mean(0) - kl).abs() <= 4 * se).all(), (log_ratio.mean(0), kl, se)


def test_kl_vmf_to_itself_is_zero():
    p = VonMisesFisher(*_params(5, 7, 0.1, 1e4, seed=3))
    torch.testing.assert_close(
        kl_divergence(p, p), torch.zeros(5, dtype=torch.float64), atol=1e-9, rtol=0
    )


@pytest.mark.parametrize(
    ("p_cls", "q_cls"), [*PAIRS, pytest.param(VonMisesFisher, HypersphericalUniform, id="vmf-u")]
)
def test_kl_broadcasts_batch_shapes(p_cls, q_cls):
    p = p_cls(*_params(3, 4, 1.0, 2.0, seed=4))
    p = p.expand((2, 3))
    q = (
        q_cls(4, dtype=torch.float64)
        if q_cls is HypersphericalUniform
        else q_cls(*_params(1, 4, 1.0, 2.0, seed=5))
    )
    assert kl_divergence(p, q).shape == (2, 3)


@pytest.mark.parametrize(("p_cls", "q_cls"), PAIRS)
def test_kl_dimension_mismatch_raises(p_cls, q_cls):
    with pytest.raises(ValueError, match="different spheres"):
        kl_divergence(p_cls(*_params(2, 3, 1, 2, 0)), q_cls(*_params(2, 4, 1, 2, 0)))


@pytest.mark.parametrize("dim", [2, 3, 10, 2048])
@pytest.mark.parametrize("kappa", [1e-8, 1e-3, 1.0, 1e3, 1e7])
def test_kl_vmf_uniform_against_mpmath(dim, kappa):
    """KL(vMF || U) = kappa A - log 0F1(; m/2; kappa^2/4) against mpmath.

    Relative error <= 5e-9 in float64. The KL contains kappa (1 - A): at kappa = 1e7 an absolute error of
    1e-15 in A (within ive_ratio's 1e-10 relative contract) moves the KL by 1e-8, i.e. ~2e-9 relative;
    for kappa <= 1e3 the error is ~1e-14.
    """
    mpmath.mp.dps = 40
    nu, k = mpmath.mpf(dim) / 2 - 1, mpmath.mpf(kappa)
    ratio = mpmath.besseli(nu + 1, k) / mpmath.besseli(nu, k)
    log_partition = (
        mpmath.loggamma(nu + 1) + mpmath.log(mpmath.besseli(nu, k)) - nu * mpmath.log(k / 2)
    )
    expected = float(k * ratio - log_partition)
    loc = torch.eye(dim, dtype=torch.float64)[0]
    got = kl_divergence(VonMisesFisher(loc, kappa), HypersphericalUniform(dim, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=5e-9 if kappa > 1e3 else 1e-12)
    got32 = kl_divergence(VonMisesFisher(loc.float(), kappa), HypersphericalUniform(dim))
    assert got32.item() == pytest.approx(expected, rel=1e-5, abs=1e-30)

"""Tests of :class:`SphericalDiffusion` and of the heat kernel of the sphere.

Statistical tests use fixed seeds. Under the null hypothesis each KS test fails with probability 1e-3
(threshold p > 1e-3) and each z-test with probability 2.7e-3 (|z| < 3); with the seeds fixed they
are deterministic.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from scipy import stats
from torch.nn.functional import normalize

from pyro_svae.distributions.diffusion import SphericalDiffusion, sample_angle
from pyro_svae.distributions.hyperspherical_uniform import HypersphericalUniform
from pyro_svae.ops import heat_kernel as hk
from pyro_svae.ops import log_sphere_area

F64 = torch.float64


@pytest.fixture(autouse=True)
def _single_thread():
    """These tests run many small tensor ops; one thread avoids oversubscription under xdist."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loc(shape, m, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(*shape, m, generator=g, dtype=dtype), dim=-1)


def _points_at_angle(loc: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Points at geodesic distance theta from loc (shape (..., m)), along a fixed orthogonal direction."""
    other = torch.zeros_like(loc)
    other[..., 0] = 1.0
    other = normalize(other - (other * loc).sum(-1, keepdim=True) * loc, dim=-1)
    th = theta.unsqueeze(-1).to(loc.dtype)
    return torch.cos(th) * loc + torch.sin(th) * other


def _angles(z: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    z, loc = z.to(F64), loc.to(F64)
    return 2.0 * torch.atan2(
        torch.linalg.vector_norm(z - loc, dim=-1), torch.linalg.vector_norm(z + loc, dim=-1)
    )


def _radial_grid(m: int, t: float, n: int = 20001):
    """Fine grid of theta over the bulk and the radial density f(theta) there (float64 numpy)."""
    d = m - 1
    hi = min(
        math.pi, max(math.sqrt(d * t), math.acos(math.exp(-0.5 * d * t))) + 12.0 * math.sqrt(t)
    )
    theta = np.linspace(0.0, hi, n)
    log_p = hk.log_heat_kernel(m, torch.tensor(t, dtype=F64), torch.from_numpy(theta)).numpy()
    if d == 1:
        log_f = math.log(2.0) + log_p
    else:
        with np.errstate(divide="ignore"):
            log_f = log_sphere_area(d) + (d - 1) * np.log(np.sin(theta)) + log_p
    return theta, np.exp(log_f), log_p


def _gauss_legendre_radial(m: int, t: float, dtype=F64, panels: int = 40, nodes: int = 20):
    """Nodes, weights and log p at the nodes for the integral over theta of the radial density.

    ``log p`` is evaluated through ``SphericalDiffusion.log_prob`` on points of S^{m-1} of ``dtype``.
    """
    d = m - 1
    centres = (math.sqrt(d * t), math.acos(math.exp(-0.5 * d * t)))
    hi = min(math.pi, max(centres) + 12.0 * math.sqrt(t))
    lo = max(0.0, min(centres) - 12.0 * math.sqrt(t))
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(lo, hi, panels + 1)
    theta = (0.5 * (edges[:-1, None] + edges[1:, None]) + 0.5 * np.diff(edges)[:, None] * x).ravel()
    weight = (0.5 * np.diff(edges)[:, None] * w).ravel()
    loc = _loc((), m, dtype)
    dist = SphericalDiffusion(loc, torch.tensor(t, dtype=dtype))
    values = _points_at_angle(loc.expand(theta.size, m), torch.from_numpy(theta))
    log_p = dist.log_prob(values).to(F64).numpy()
    if d == 1:
        log_jac = np.full_like(theta, math.log(2.0))
    else:
        log_jac = log_sphere_area(d) + (d - 1) * np.log(np.sin(theta))
    return theta, weight, log_p, log_jac


def _mp_log_kernel(m: int, t: float, theta: float) -> float:
    """Reference log p_t(theta) from the Gegenbauer series in high precision (mpmath)."""
    d = m - 1
    digits = 30 + int(theta * theta / (2.0 * t) / 2.3) + int((d + 2) * abs(math.log(t)) / 2.3)
    with mpmath.workdps(digits):
        tt, x = mpmath.mpf(t), mpmath.cos(mpmath.mpf(theta))
        tol = mpmath.mpf(10) ** (-digits + 5)
        a = mpmath.mpf(d - 1) / 2
        if d == 1:
            total, l = mpmath.mpf(1), 1
            while mpmath.exp(-l * l * tt / 2) > tol or l < 5:
                total += 2 * mpmath.exp(-l * l * tt / 2) * mpmath.cos(l * mpmath.mpf(theta))
                l += 1
            return float(mpmath.log(total / (2 * mpmath.pi)))
        c0, c1 = mpmath.mpf(1), 2 * a * x
        total = c0 + mpmath.exp(-d * tt / 2) * (1 + a) / a * c1
        l = 1
        while True:
            c0, c1 = c1, (2 * (l + a) * x * c1 - (l + 2 * a - 1) * c0) / (l + 1)
            l += 1
            weight = mpmath.exp(-l * (l + 2 * a) * tt / 2) * (l + a) / a
            total += weight * c1
            if weight * mpmath.binomial(l + 2 * a - 1, l) < tol and l > 5:
                break
        log_area = (
            mpmath.log(2) + (d + 1) * mpmath.log(mpmath.pi) / 2 - mpmath.loggamma((d + 1) / 2.0)
        )
        return float(mpmath.log(total) - log_area)


# --------------------------------------------------------------------------------------------------
# Shapes, expand, support, validation.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 5])
@pytest.mark.parametrize(
    ("loc_batch", "time_shape", "batch"),
    [((), (), ()), ((4,), (4,), (4,)), ((4,), (), (4,)), ((), (3,), (3,)), ((2, 1), (3,), (2, 3))],
)
@pytest.mark.parametrize("steps", [None, 3])
def test_shapes(m, loc_batch, time_shape, batch, steps):
    loc = _loc(loc_batch, m)
    time = 0.1 + torch.rand(time_shape, dtype=F64)
    dist = SphericalDiffusion(loc, time, steps=steps)
    assert dist.batch_shape == batch
    assert dist.event_shape == (m,)
    assert SphericalDiffusion.infer_shapes(loc.shape, time.shape) == (batch, (m,))
    z = dist.rsample((5,))
    assert z.shape == (5, *batch, m)
    assert dist.log_prob(z).shape == (5, *batch)
    assert dist.sample().shape == (*batch, m)
    assert dist.mean.shape == (*batch, m)
    assert dist.entropy().shape == batch
    assert dist.kl_to_uniform().shape == batch
    assert dist.kl_to_uniform(approximation=True).shape == batch


def test_time_as_number_and_float32():
    loc = _loc((3,), 4, torch.float32)
    dist = SphericalDiffusion(loc, 0.2)
    assert dist.time.dtype == torch.float32
    assert dist.time.shape == (3,)
    z = dist.rsample((7,))
    assert z.dtype == torch.float32
    assert dist.log_prob(z).dtype == torch.float32
    assert dist.entropy().dtype == torch.float32


@pytest.mark.parametrize("steps", [None, 2])
def test_expand(steps):
    dist = SphericalDiffusion(_loc((), 3), torch.tensor(0.3, dtype=F64), steps=steps)
    big = dist.expand((4, 2))
    assert type(big) is SphericalDiffusion
    assert big.batch_shape == (4, 2)
    assert big.steps == steps
    assert big.rsample((3,)).shape == (3, 4, 2, 3)
    z = big.sample()
    assert torch.allclose(big.log_prob(z), dist.log_prob(z))

    def model():
        with pyro.plate("data", 6):
            pyro.sample("z", dist)

    trace = pyro.poutine.trace(model).get_trace()
    site = trace.nodes["z"]
    assert type(site["fn"]) is SphericalDiffusion
    assert site["fn"].batch_shape == (6,)
    assert site["value"].shape == (6, 3)


@pytest.mark.parametrize("m", [2, 3, 4, 7])
@pytest.mark.parametrize("t", [1e-6, 0.05, 3.0])
@pytest.mark.parametrize("steps", [None, 4])
def test_support(m, t, steps):
    dist = SphericalDiffusion(_loc((5,), m), torch.full((5,), t, dtype=F64), steps=steps)
    z = dist.rsample((50,))
    assert bool(dist.support.check(z).all())
    assert torch.allclose(torch.linalg.vector_norm(z, dim=-1), torch.ones(()).to(z), atol=1e-12)


def test_validation():
    loc = _loc((3,), 4)
    with pytest.raises(ValueError, match="loc"):
        SphericalDiffusion(2.0 * loc, torch.ones(3, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="time"):
        SphericalDiffusion(loc, torch.tensor([1.0, 0.0, 1.0], dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="time"):
        SphericalDiffusion(loc, torch.tensor([1.0, -1.0, 1.0], dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="time"):
        SphericalDiffusion(loc, torch.tensor([1.0, math.nan, 1.0], dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="trailing singleton"):
        SphericalDiffusion(loc, torch.ones(3, 1, dtype=F64))
    with pytest.raises(ValueError, match="broadcast"):
        SphericalDiffusion(loc, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="m >= 2"):
        SphericalDiffusion(torch.ones(3, 1, dtype=F64), torch.ones(3, dtype=F64))
    for steps in [0, -1, 2.5, True]:
        with pytest.raises(ValueError, match="steps"):
            SphericalDiffusion(loc, 1.0, steps=steps)
    dist = SphericalDiffusion(loc, torch.ones(3, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="shape"):
        dist.log_prob(torch.ones(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="support"):
        dist.log_prob(2.0 * loc)
    SphericalDiffusion(2.0 * loc, -torch.ones(3, dtype=F64), validate_args=False)  # no check


def test_mean_mode():
    loc = _loc((2,), 5)
    time = torch.tensor([0.1, 2.0], dtype=F64)
    dist = SphericalDiffusion(loc, time)
    assert torch.equal(dist.mode, loc)
    assert torch.allclose(dist.mean, torch.exp(-2.0 * time).unsqueeze(-1) * loc)


# --------------------------------------------------------------------------------------------------
# The heat kernel.
# --------------------------------------------------------------------------------------------------


CASES_KERNEL = [(m, t) for m in (2, 3, 4, 5, 10, 30) for t in (1e-4, 3e-3, 0.05, 0.2, 1.0, 5.0)]


@pytest.mark.parametrize(("m", "t"), CASES_KERNEL)
def test_normalisation_float64(m, t):
    """int p dsigma = 1 and E[mu^T z] = exp(-(m-1) t / 2) (generator Delta/2) by 1-D quadrature."""
    theta, weight, log_p, log_jac = _gauss_legendre_radial(m, t)
    density = np.exp(log_p + log_jac)
    assert abs((weight * density).sum() - 1.0) < 1e-10
    mean_cos = (weight * density * np.cos(theta)).sum()
    assert abs(mean_cos - math.exp(-0.5 * (m - 1) * t)) < 1e-10


@pytest.mark.parametrize(
    ("m", "t"), [(2, 0.01), (3, 1e-4), (3, 0.5), (5, 0.02), (10, 2.0), (30, 1e-3)]
)
def test_normalisation_float32(m, t):
    _theta, weight, log_p, log_jac = _gauss_legendre_radial(m, t, dtype=torch.float32)
    assert abs((weight * np.exp(log_p + log_jac)).sum() - 1.0) < 1e-4


@pytest.mark.parametrize(("m", "t"), [(2, 0.5), (3, 0.3), (4, 1.0), (6, 2.0)])
def test_normalisation_monte_carlo(m, t):
    """|S| E_U[p(z)] = 1 with z uniform (3 standard errors)."""
    torch.manual_seed(0)
    dist = SphericalDiffusion(_loc((), m), torch.tensor(t, dtype=F64))
    z = HypersphericalUniform(m, dtype=F64).sample((40000,))
    ratio = torch.exp(dist.log_prob(z) + log_sphere_area(m))
    se = ratio.std() / math.sqrt(ratio.numel())
    assert abs(ratio.mean().item() - 1.0) < 3.0 * se.item()


MP_POINTS = [
    (2, 0.01, 1.0),
    (2, 0.3, math.pi),
    (3, 1e-3, 0.05),
    (3, 0.05, 1.2),
    (3, 0.2, 3.1),
    (3, 0.2, math.pi),
    (4, 0.3, math.pi),
    (5, 0.01, 0.3),
    (5, 0.15, 2.0),
    (5, 2.0, 2.5),
    (10, 0.02, 0.7),
    (10, 0.11, 1.9),
    (10, 0.3, 3.0),
    (30, 0.005, 0.5),
    (30, 0.05, 1.5),
    (50, 0.03, 1.2),
    (100, 0.01, 1.1),
]


@pytest.mark.parametrize(("m", "t", "theta"), MP_POINTS)
def test_kernel_against_mpmath(m, t, theta):
    got = hk.log_heat_kernel(m, torch.tensor(t, dtype=F64), torch.tensor(theta, dtype=F64)).item()
    assert abs(got - _mp_log_kernel(m, t, theta)) < 1e-10


@pytest.mark.parametrize("m", [3, 4, 5, 10, 20, 50, 100])
def test_switch_continuity(m):
    """Across the smallest series time t_min(m) log p is continuous (jump below 1e-9 in the bulk),
    and where both representations claim accuracy they agree to 1e-10."""
    t_min = hk.series_min_time(m)
    theta = torch.linspace(0.0, 3.0, 301, dtype=F64)
    t = torch.full_like(theta, t_min, requires_grad=True)
    log_p = hk.log_heat_kernel(m, t, theta)
    (dt,) = torch.autograd.grad(log_p.sum(), t)
    eps = 1e-9
    below = hk.log_heat_kernel(m, t.detach() * (1 - eps), theta)
    above = hk.log_heat_kernel(m, t.detach() * (1 + eps), theta)
    jump = (above - below) - dt * 2 * eps * t_min
    log_f = log_p.detach() + (m - 2) * torch.log(torch.sin(theta).clamp_min(1e-300))
    bulk = log_f > log_f.max() - 30.0
    assert jump[bulk].abs().max() < 1e-9
    series, err_s = hk._log_series(m - 1, t.detach(), theta)
    expansion, err_e = hk._log_expansion(m - 1, t.detach(), theta)
    both = (err_s < 1e-11) & (err_e < 1e-11)
    assert both.sum() > 50
    assert (series - expansion)[both].abs().max() < 1e-10


@pytest.mark.parametrize("m", [2, 3, 4, 10, 100])
def test_kernel_finite_with_gradients(m):
    """log p and its gradients are finite for t in [1e-6, 10] and theta in [0, pi] (antipode too)."""
    t = torch.exp(torch.linspace(math.log(1e-6), math.log(10.0), 25, dtype=F64))
    theta = torch.cat(
        [
            torch.tensor([0.0, 1e-12, math.pi - 1e-9, math.pi], dtype=F64),
            torch.linspace(0, math.pi, 21, dtype=F64),
        ]
    )
    t, theta = (x.clone().requires_grad_() for x in torch.meshgrid(t, theta, indexing="ij"))
    log_p = hk.log_heat_kernel(m, t, theta)
    assert bool(torch.isfinite(log_p).all())
    grads = torch.autograd.grad(log_p.sum(), [t, theta])
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    # decreasing in theta (the kernel of the sphere is radially decreasing); for m > 4 only checked
    # where the radial density is within e^-40 of its maximum (not in the far antipodal cap)
    grid = log_p.detach()[:, 4:]
    log_f = grid + (m - 2) * torch.log(torch.sin(theta.detach()[:, 4:]).clamp_min(1e-300))
    relevant = (log_f > log_f.max(dim=-1, keepdim=True).values - 40.0) | (m <= 4)
    assert bool((grid.diff(dim=-1)[relevant[:, 1:]] <= 1e-12).all())


def test_no_singularity_at_the_mode():
    """log p at z = mu (r = 0, where the chordal formula of the ΔVAE code divides by zero) is finite,
    equal to the limit, with zero gradient."""
    loc = _loc((), 3).requires_grad_()
    time = torch.tensor(0.01, dtype=F64, requires_grad=True)
    dist = SphericalDiffusion(loc, time)
    value = loc.detach().clone().requires_grad_()
    log_p = dist.log_prob(value)
    near = dist.log_prob(_points_at_angle(loc.detach(), torch.tensor(1e-7, dtype=F64)))
    assert torch.isfinite(log_p)
    assert abs(log_p.item() - near.item()) < 1e-9
    g_value, g_loc, g_time = torch.autograd.grad(log_p, [value, loc, time])
    assert torch.allclose(g_value, torch.zeros(3, dtype=F64))
    assert torch.allclose(g_loc, torch.zeros(3, dtype=F64))
    assert torch.isfinite(g_time)


# --------------------------------------------------------------------------------------------------
# Sampling.
# --------------------------------------------------------------------------------------------------


SAMPLER_CASES = [
    (2, 0.01),
    (2, 2.0),
    (3, 1e-4),
    (3, 0.1),
    (3, 3.0),
    (4, 0.05),
    (4, 2.0),
    (10, 0.002),
    (10, 0.2),
    (10, 1.0),
    (50, 0.1),  # time split into exact steps (composition)
    (100, 0.005),
]


@pytest.mark.parametrize(("m", "t"), SAMPLER_CASES)
def test_sampler_ks(m, t):
    """KS test of theta = arccos(mu^T z) against the exact marginal (p > 1e-3, fixed seed)."""
    torch.manual_seed(1)
    loc = _loc((), m)
    z = SphericalDiffusion(loc, torch.tensor(t, dtype=F64)).rsample((4000,))
    theta = _angles(z, loc).numpy()
    grid, f, _ = _radial_grid(m, t)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))])
    assert abs(cdf[-1] - 1.0) < 1e-6
    assert stats.kstest(theta, lambda x: np.interp(x, grid, cdf)).pvalue > 1e-3


@pytest.mark.parametrize(
    ("m", "t"), [(2, 0.5), (3, 0.01), (3, 1.5), (5, 0.3), (10, 0.05), (30, 0.03)]
)
def test_mean_cosine(m, t):
    """E[mu^T z] = exp(-(m-1) t / 2) exactly for Brownian motion (3 standard errors)."""
    torch.manual_seed(2)
    loc = _loc((), m)
    w = SphericalDiffusion(loc, torch.tensor(t, dtype=F64)).rsample((20000,)) @ loc
    se = w.std().item() / math.sqrt(w.numel())
    assert abs(w.mean().item() - math.exp(-0.5 * (m - 1) * t)) < 4.0 * se


@pytest.mark.parametrize("m", [2, 3, 5, 10])
@pytest.mark.parametrize("t", [0.002, 0.4])
def test_time_gradient_unbiased(m, t):
    """Monte Carlo d/dt E[mu^T z] (implicit reparameterisation) vs -(m-1)/2 exp(-(m-1)t/2)."""
    torch.manual_seed(3)
    n = 20000
    loc = _loc((), m)
    time = torch.full(
        (n,), t, dtype=F64, requires_grad=True
    )  # one leaf per sample: per-sample grads
    w = SphericalDiffusion(loc, time).rsample() @ loc
    (grad,) = torch.autograd.grad(w.sum(), time)
    se = grad.std().item() / math.sqrt(n)
    exact = -0.5 * (m - 1) * math.exp(-0.5 * (m - 1) * t)
    assert abs(grad.mean().item() - exact) < 3.0 * se


@pytest.mark.parametrize("m", [3, 5])
def test_loc_gradient_unbiased(m):
    """Pathwise gradient in loc: d/dmu E[a^T z] = exp(-(m-1)t/2) a, tangent part (3 standard errors)."""
    torch.manual_seed(4)
    n, t = 20000, 0.3
    loc0 = _loc((), m)
    a = _loc((), m, seed=5)
    loc = loc0.expand(n, m).clone().requires_grad_()
    z = SphericalDiffusion(loc, torch.tensor(t, dtype=F64)).rsample()
    (grad,) = torch.autograd.grad((z @ a).sum(), loc)
    tangent = grad - (grad @ loc0).unsqueeze(-1) * loc0
    exact = math.exp(-0.5 * (m - 1) * t) * (a - (a @ loc0) * loc0)
    se = tangent.std(0) / math.sqrt(n)
    assert bool(((tangent.mean(0) - exact).abs() < 3.0 * se + 1e-12).all())


@pytest.mark.parametrize("m", [2, 3, 4, 10, 100])
def test_gradients_finite(m):
    """rsample, log_prob and the KL have finite gradients for t in [1e-6, 10]."""
    torch.manual_seed(5)
    time = torch.exp(torch.linspace(math.log(1e-6), math.log(10.0), 15, dtype=F64)).requires_grad_()
    loc = _loc((15,), m).requires_grad_()
    dist = SphericalDiffusion(loc, time)
    z = dist.rsample((3,))
    loss = (
        z.sum()
        + dist.log_prob(z).sum()
        + dist.log_prob(z.detach()).sum()
        + dist.kl_to_uniform().sum()
    )
    g_time, g_loc = torch.autograd.grad(loss, [time, loc])
    assert bool(torch.isfinite(g_time).all())
    assert bool(torch.isfinite(g_loc).all())


def test_sample_angle_hopf_matches_direct():
    """m = 3 uses the Hopf fibration from S^3 at t/4; its law matches the S^2 kernel (KS, p > 1e-3)."""
    torch.manual_seed(6)
    t = 0.7
    theta = sample_angle(2, torch.full((5000,), t, dtype=F64)).numpy()
    grid, f, _ = _radial_grid(3, t)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))])
    assert stats.kstest(theta, lambda x: np.interp(x, grid, cdf)).pvalue > 1e-3


def test_envelope_bounds_the_density():
    """The Feynman–Kac envelope is a bound: log f - log g - log M <= 0 on a dense grid (exact sampler)."""
    from pyro_svae.distributions.diffusion import _gaussian_envelope

    for d in (3, 4, 9, 29, 99):
        for t in (1e-5, 1e-3, 0.02, 0.1, 0.5, 2.0):
            theta = torch.linspace(1e-6, math.pi - 1e-6, 2001, dtype=F64)
            tt = torch.full_like(theta, t)
            s2, log_m = _gaussian_envelope(d, tt)
            log_p = hk.log_heat_kernel(d + 1, tt, theta)
            log_ratio = (
                (d - 1) * torch.log(torch.sin(theta) / theta)
                + log_p
                + 0.5 * d * torch.log(2 * math.pi * s2)
                + theta**2 / (2 * s2)
                - log_m
            )
            assert log_ratio.max() < 1e-9


@pytest.mark.parametrize(("m", "t", "steps", "biased"), [(3, 0.01, 50, False), (10, 0.5, 2, True)])
def test_random_walk(m, t, steps, biased):
    """The ΔVAE random walk: reparameterised, on the sphere, and biased when (m-1) t / steps is large."""
    torch.manual_seed(7)
    loc = _loc((), m).requires_grad_()
    time = torch.tensor(t, dtype=F64, requires_grad=True)
    z = SphericalDiffusion(loc, time, steps=steps).rsample((20000,))
    w = z @ loc.detach()
    g_time, g_loc = torch.autograd.grad(w.mean(), [time, loc])
    assert torch.isfinite(g_time)
    assert g_time < 0
    assert bool(torch.isfinite(g_loc).all())
    se = w.std().item() / math.sqrt(w.numel())
    deviation = abs(w.mean().item() - math.exp(-0.5 * (m - 1) * t)) / se
    assert (deviation > 10.0) if biased else (deviation < 3.0)


# --------------------------------------------------------------------------------------------------
# Entropy and KL.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "t"), [(2, 0.05), (3, 1e-3), (3, 0.5), (5, 0.02), (10, 0.3), (30, 0.01), (30, 0.5)]
)
def test_kl_against_quadrature(m, t):
    """Tabulated exact KL vs a direct, finer quadrature of E[log p] (1e-10 relative)."""
    _theta, weight, log_p, log_jac = _gauss_legendre_radial(m, t, panels=60, nodes=24)
    kl = (weight * np.exp(log_p + log_jac) * log_p).sum() + log_sphere_area(m)
    dist = SphericalDiffusion(_loc((), m), torch.tensor(t, dtype=F64))
    assert abs(dist.kl_to_uniform().item() - kl) < 1e-10 * max(1.0, abs(kl))
    assert abs(dist.entropy().item() - (log_sphere_area(m) - kl)) < 1e-9 * max(1.0, abs(kl))


@pytest.mark.parametrize("m", [2, 4, 10])
def test_kl_large_time_and_gradient(m):
    """KL > 0, decreasing to 0 like (m/2) e^{-(m-1)t}; d KL/dt matches finite differences."""
    d = m - 1
    time = torch.tensor([0.01, 0.3, 1.0, 4.0, 40.0 / d, 80.0 / d], dtype=F64, requires_grad=True)
    kl = SphericalDiffusion(_loc((6,), m), time).kl_to_uniform()
    assert bool((kl > 0).all())
    assert bool((kl.diff() < 0).all())
    tail = 0.5 * (d + 1) * torch.exp(-d * time[-1])
    assert abs(kl[-1].item() / tail.item() - 1.0) < 1e-6
    (grad,) = torch.autograd.grad(kl.sum(), time)
    h = 1e-6 * time.detach()
    fd = (
        SphericalDiffusion(_loc((6,), m), time.detach() + h).kl_to_uniform()
        - SphericalDiffusion(_loc((6,), m), time.detach() - h).kl_to_uniform()
    ) / (2 * h)
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("m", [2, 3, 5, 20])
def test_kl_approximation_small_time(m):
    """The ΔVAE closed form (generator Delta/2) is the small-t expansion: error O(t^2), so the
    relative error falls by ~100 per decade."""
    time = torch.tensor([1e-2, 1e-3, 1e-4], dtype=F64)
    dist = SphericalDiffusion(_loc((3,), m), time)
    exact, approx = dist.kl_to_uniform(), dist.kl_to_uniform(approximation=True)
    rel = ((approx - exact) / exact).abs()
    assert rel[-1] < 1e-7
    assert bool((rel[1:] < rel[:-1] / 30.0).all()) or rel[-1] < 1e-12


@pytest.mark.parametrize(("m", "t"), [(3, 0.05), (6, 0.5)])
def test_entropy_monte_carlo(m, t):
    torch.manual_seed(8)
    dist = SphericalDiffusion(_loc((), m), torch.tensor(t, dtype=F64))
    neg_log_p = -dist.log_prob(dist.sample((20000,)))
    se = neg_log_p.std().item() / math.sqrt(neg_log_p.numel())
    assert abs(neg_log_p.mean().item() - dist.entropy().item()) < 3.0 * se


# --------------------------------------------------------------------------------------------------
# Pyro.
# --------------------------------------------------------------------------------------------------


def test_svi_step():
    """One SVI step of a toy ΔVAE-like model: the guide's time and loc get finite gradients."""
    pyro.clear_param_store()
    torch.manual_seed(9)
    data = _loc((8,), 3)

    def model(x):
        with pyro.plate("data", x.size(0)):
            z = pyro.sample("z", HypersphericalUniform(3, dtype=x.dtype))
            pyro.sample("x", pdist.Normal(z, 0.1).to_event(1), obs=x)

    def guide(x):
        raw = pyro.param("raw", torch.randn(x.size(0), 3, dtype=x.dtype))
        log_t = pyro.param("log_t", torch.full((x.size(0),), -2.0, dtype=x.dtype))
        with pyro.plate("data", x.size(0)):
            pyro.sample("z", SphericalDiffusion(normalize(raw, dim=-1), log_t.exp()))

    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    loss = svi.step(data)
    assert math.isfinite(loss)
    for name in ("raw", "log_t"):
        assert bool(torch.isfinite(pyro.param(name)).all())

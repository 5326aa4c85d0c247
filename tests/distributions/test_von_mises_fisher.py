"""Exactness tests for VonMisesFisher: samplers, gradients, densities and extremes.

Statistical tests use fixed seeds; tolerances are stated per test (KS: p > 1e-3; moments and gradients:
within 3 or 4 standard errors, i.e. false-failure rates of 0.3 % / 6e-5 per check for a random seed).
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from torch.nn.functional import normalize

from pyro_svae.distributions import HypersphericalUniform, VonMisesFisher
from pyro_svae.distributions.vmf_marginal import marginal_dw_dkappa, sample_marginal
from pyro_svae.ops import log_sphere_area, vmf_mean_resultant


def _e1(dim: int, dtype=torch.float64) -> torch.Tensor:
    e1 = torch.zeros(dim, dtype=dtype)
    e1[0] = 1.0
    return e1


def _marginal_cdf(dim: int, kappa: float, one_minus_w: np.ndarray) -> np.ndarray:
    """Exact CDF of 1 - w (density ∝ exp(-kappa s) (s (2 - s))^((m-3)/2) on [0, 2]) at sorted points."""
    a = 0.5 * (dim - 3)
    # shift by the maximum of the log density for stability
    s_mode = 0.0 if a <= 0 else min(2.0, 2 * a / (kappa + a + math.sqrt(kappa * kappa + a * a)))
    peak = -kappa * s_mode + (a * math.log(s_mode * (2 - s_mode)) if 0 < s_mode < 2 else 0.0)

    def density(s):
        return math.exp(-kappa * s + a * math.log(s * (2.0 - s)) - peak) if 0 < s < 2 else 0.0

    scale = min(2.0, 50.0 * (dim + 1) / kappa)
    edges = np.concatenate([[0.0], np.sort(one_minus_w), [2.0]])
    pieces = [
        scipy.integrate.quad(
            density, lo, hi, limit=200, points=[x for x in (s_mode,) if lo < x < hi]
        )[0]
        if lo < scale
        else 0.0
        for lo, hi in itertools.pairwise(edges)
    ]
    cumulative = np.cumsum(pieces)
    return cumulative[:-1] / cumulative[-1]


@pytest.mark.parametrize("dim", [2, 3, 4, 5, 10, 50])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 10.0, 300.0, 1e5])
def test_marginal_matches_exact_cdf(dim, kappa):
    """Kolmogorov–Smirnov of w = mu^T z against the exact marginal CDF (p > 1e-3 at a fixed seed)."""
    torch.manual_seed(dim * 1000 + int(math.log10(kappa) * 10))
    loc = normalize(torch.randn(dim, dtype=torch.float64), dim=0)
    z = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).sample((3000,))
    one_minus_w = (1.0 - z @ loc).clamp(0.0, 2.0).numpy()
    cdf = _marginal_cdf(dim, kappa, one_minus_w)
    statistic = np.max(
        np.maximum(
            np.arange(1, cdf.size + 1) / cdf.size - cdf, cdf - np.arange(cdf.size) / cdf.size
        )
    )
    p_value = scipy.stats.kstwo.sf(statistic, cdf.size)
    assert p_value > 1e-3, (statistic, p_value)


@pytest.mark.parametrize("dim", [2, 3, 5, 10, 50, 100])
@pytest.mark.parametrize("kappa", [0.5, 10.0, 1000.0])
def test_concentration_gradient_unbiased(dim, kappa):
    """Monte-Carlo d E[mu^T z] / d kappa equals A_m'(kappa) within 3 standard errors."""
    torch.manual_seed(dim + int(kappa))
    n = 100000
    concentration = torch.full((n,), kappa, dtype=torch.float64, requires_grad=True)
    loc = _e1(dim).expand(n, dim)
    w = VonMisesFisher(loc, concentration).rsample()[:, 0]
    (grad,) = torch.autograd.grad(w.sum(), concentration)
    a = vmf_mean_resultant(dim, torch.tensor(kappa, dtype=torch.float64)).item()
    exact = 1.0 - a * a - (dim - 1) * a / kappa
    se = grad.std().item() / math.sqrt(n)
    assert abs(grad.mean().item() - exact) <= 3 * se, (grad.mean().item(), exact, se)


def _mpmath_dw_dkappa(dim: int, kappa: float, one_minus_w: float) -> float:
    """dw/dkappa = -int_{-1}^{w} (t - A) f(t)/f(w) dt in mpmath (30 digits), in s = 1 - t."""
    mpmath.mp.dps = 30
    nu = mpmath.mpf(dim) / 2
    mean = mpmath.besseli(nu, kappa) / mpmath.besseli(nu - 1, kappa)
    a = mpmath.mpf(dim - 3) / 2
    sw = mpmath.mpf(one_minus_w)

    def integrand(s):
        return (
            (1 - s - mean) * mpmath.exp(-kappa * (s - sw)) * ((s * (2 - s)) / (sw * (2 - sw))) ** a
        )

    # -int_{-1}^{w} = int_{w}^{1} (the full integral vanishes); split where the integrand changes scale
    points = {0.0, float(sw) * 1e-4, float(sw) / 2, float(sw), 2.0}
    points |= {float(sw + c / kappa) for c in (1, 10, 40)} | {float(sw) * c for c in (1.01, 2, 10)}
    points = sorted(p for p in points if 0 <= p <= 2)
    lower = mpmath.quad(integrand, [p for p in points if p >= sw])
    return (
        float(-lower) if dim != 2 else float(mpmath.quad(integrand, [p for p in points if p <= sw]))
    )


@pytest.mark.parametrize(
    ("dim", "kappa"),
    [
        (2, 5.0),
        (3, 0.01),
        (3, 40.0),
        (4, 10.0),  # the mode is next to 1: the opposite endpoint is close to w on the lower side
        (4, 1e3),
        (5, 0.3),
        (6, 10.0),
        (10, 30.0),
        (50, 1e4),
        (100, 1.0),
    ],
)
@pytest.mark.parametrize(("result_dtype", "rel"), [(torch.float64, 1e-8), (torch.float32, 2e-6)])
def test_implicit_gradient_matches_mpmath(dim, kappa, result_dtype, rel):
    """Pointwise dw/dkappa against mpmath, to the accuracy the result's dtype asks for."""
    torch.manual_seed(0)
    k = torch.full((6,), kappa, dtype=torch.float64)
    w, one_minus_w, _ = sample_marginal(dim, k)
    ours = marginal_dw_dkappa(dim, k, w, one_minus_w, result_dtype=result_dtype)
    for i in range(6):
        expected = _mpmath_dw_dkappa(dim, kappa, one_minus_w[i].item())
        assert ours[i].item() == pytest.approx(expected, rel=rel), (i, w[i].item())


def _mpmath_circle_dw_dkappa(kappa: float, one_minus_w: float) -> float:
    """m = 2: dw/dkappa = -int_{-1}^{w} (t - A) f(t)/f(w) dt with f ∝ e^{kappa t} (1 - t^2)^{-1/2},
    in v = 1 - t, on the side with no cancellation (t - A < 0 there whenever w < A)."""
    mpmath.mp.dps = 50
    k, o = mpmath.mpf(kappa), mpmath.mpf(one_minus_w)
    mean = mpmath.besseli(1, k) / mpmath.besseli(0, k)

    def integrand(v):
        d = v * (2 - v)
        if d == 0:  # tanh-sinh nodes rounded onto the integrable end singularity
            return mpmath.mpf(0)
        return ((1 - v) - mean) * mpmath.exp(-k * (v - o)) * mpmath.sqrt(o * (2 - o) / d)

    points = [o] + [o + c / k for c in (1, 10, 100) if o + c / k < 2] + [mpmath.mpf(2)]
    return float(-mpmath.quad(integrand, points))


@pytest.mark.parametrize("kappa", [0.1, 30.0, 1e3, 1e5, 1e7])
@pytest.mark.parametrize(("result_dtype", "rel"), [(torch.float64, 1e-8), (torch.float32, 1e-6)])
def test_circle_implicit_gradient_in_the_tails(kappa, result_dtype, rel):
    """m = 2 on a grid of kappa (1 - w) up to 300, far in the lower tail: integrating [w, 1] there
    cancelled O(1) terms down to F(w) (dw/dkappa of -1e120 or NaN at kappa (1 - w) ~ 50)."""
    scaled = [1e-6, 0.01, 0.5, 1.0, 2.0, 2.9, 3.1, 5.0, 20.0, 50.0, 300.0]
    one_minus_w = torch.tensor(
        [c / kappa for c in scaled] + [0.5, 1.0, 1.5, 1.99], dtype=torch.float64
    )
    one_minus_w = one_minus_w[one_minus_w < 2].unique()
    k = torch.full_like(one_minus_w, kappa)
    ours = marginal_dw_dkappa(2, k, 1 - one_minus_w, one_minus_w, result_dtype=result_dtype)
    expected = torch.tensor(
        [_mpmath_circle_dw_dkappa(kappa, o) for o in one_minus_w.tolist()], dtype=torch.float64
    )
    # t - A on the upper side inherits the rounding of A = I_1/I_0 (relative to A, ~1e-14) as an
    # error relative to 1 - A ~ 1/(2 kappa): the documented floor 1e-13 kappa (observed 2.7e-7 at 1e7)
    tol = max(rel, 1e-13 * kappa)
    err = (ours / expected - 1).abs()
    assert (err <= tol).all(), (one_minus_w[err > tol], err.max())


#: Documented relative error of the float32-result dw/dkappa (vmf_marginal.quadrature_settings).
FLOAT32_GRAD_REL = {4: 4e-6}


@pytest.mark.parametrize("dim", [4, 10, 32])
@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e7])
def test_float32_implicit_gradient_next_to_the_pole(dim, kappa):
    """1 - w below the float32 range: finite and as accurate as elsewhere (it was NaN below 1e-45
    and wrong below ~3e-39, where 1 / (1 - w) overflows float32)."""
    one_minus_w = torch.tensor(
        [1e-20, 1e-36, 1e-38, 3e-39, 1e-40, 1e-44, 1.4e-45, 1e-46, 1e-60, 1e-100, 1e-150],
        dtype=torch.float64,
    )
    k = torch.full_like(one_minus_w, kappa)
    expected = marginal_dw_dkappa(dim, k, 1.0 - one_minus_w, one_minus_w)
    ours = marginal_dw_dkappa(dim, k, 1.0 - one_minus_w, one_minus_w, result_dtype=torch.float32)
    assert torch.isfinite(ours).all(), ours
    assert (expected > 0).all()  # the float64 path is fine here: dw/dkappa ~ (1 - w) / kappa
    rel = FLOAT32_GRAD_REL.get(dim, 1e-6)
    assert torch.allclose(ours, expected, rtol=rel, atol=0.0), (ours / expected - 1).abs().max()
    at_pole = marginal_dw_dkappa(
        dim, k[:1], torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    )
    assert at_pole.item() == 0.0


@pytest.mark.parametrize("dim", [4, 5, 10, 32, 50, 1000])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 1e3, 1e5, 1e7])
def test_float32_implicit_gradient_error_bound(dim, kappa):
    """The float32-result quadrature against the float64 one (~1e-10 of mpmath) over draws, a grid
    of 1 - w across the support and the neighbourhood of the mode, where m = 4 is worst."""
    torch.manual_seed(dim)
    a = 0.5 * (dim - 3)
    mode_gap = 2 * a / (kappa + a + math.sqrt(a * a + kappa * kappa))  # 1 - mode, no cancellation
    one_minus_w = torch.cat(
        [
            sample_marginal(dim, torch.full((2000,), kappa, dtype=torch.float64))[1],
            torch.logspace(-30, math.log10(2.0), 300, dtype=torch.float64),
            2.0 - torch.logspace(-12, 0, 100, dtype=torch.float64),
            mode_gap * (1.0 + torch.logspace(-8, 0, 400, dtype=torch.float64)),
            mode_gap * (1.0 - torch.logspace(-8, -0.01, 400, dtype=torch.float64)),
        ]
    )
    one_minus_w = one_minus_w[(one_minus_w > 0) & (one_minus_w < 2)]
    k = torch.full_like(one_minus_w, kappa)
    expected = marginal_dw_dkappa(dim, k, 1.0 - one_minus_w, one_minus_w)
    ours = marginal_dw_dkappa(dim, k, 1.0 - one_minus_w, one_minus_w, result_dtype=torch.float32)
    rel = ((ours - expected).abs() / expected.abs()).max().item()
    assert rel <= FLOAT32_GRAD_REL.get(dim, 1e-6), rel


def test_loc_gradient_unbiased():
    """d E[c^T z] / d theta with loc = normalize(theta) equals the gradient of A c^T normalize(theta)."""
    torch.manual_seed(5)
    dim, kappa, n = 6, 3.0, 100000
    theta = torch.randn(dim, dtype=torch.float64)
    c = torch.randn(dim, dtype=torch.float64)
    thetas = theta.expand(n, dim).clone().requires_grad_()
    z = VonMisesFisher(
        normalize(thetas, dim=-1), torch.tensor(kappa, dtype=torch.float64)
    ).rsample()
    (per_sample,) = torch.autograd.grad((z @ c).sum(), thetas)
    theta_leaf = theta.clone().requires_grad_()
    a = vmf_mean_resultant(dim, torch.tensor(kappa, dtype=torch.float64))
    (exact,) = torch.autograd.grad(a * normalize(theta_leaf, dim=0) @ c, theta_leaf)
    se = per_sample.std(0) / math.sqrt(n)
    assert ((per_sample.mean(0) - exact).abs() <= 4 * se).all(), (per_sample.mean(0), exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pole", ["e1", "-e1", "near-e1", "near--e1"])
def test_rotation_at_poles(dtype, pole):
    dim = 7
    sign = -1.0 if "-e1" in pole else 1.0
    theta = sign * _e1(dim, torch.float64)
    if pole.startswith("near"):
        theta = theta + 1e-7 * torch.randn(
            dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
    theta = theta.to(dtype).requires_grad_()
    d = VonMisesFisher(normalize(theta, dim=0), torch.tensor(20.0, dtype=dtype))
    z = d.rsample((2000,))
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    assert (z.norm(dim=-1) - 1).abs().max() < tolerance
    target = torch.randn(dim, dtype=dtype)
    (grad,) = torch.autograd.grad((z @ target).mean(), theta)
    assert torch.isfinite(grad).all()
    assert grad.abs().max() < 10 * target.abs().max()  # bounded: no blow-up next to the pole


@pytest.mark.parametrize("dim", [2, 3, 10, 2048])
@pytest.mark.parametrize("kappa", [1e-8, 1.0, 1e3, 1e7])
def test_log_prob_against_mpmath(dim, kappa):
    """log p at three cosines, float64 relative error <= 1e-10 and float32 <= 1e-5."""
    mpmath.mp.dps = 40
    nu = mpmath.mpf(dim) / 2 - 1
    k = mpmath.mpf(kappa)
    log_c = (
        nu * mpmath.log(k)
        - (mpmath.mpf(dim) / 2) * mpmath.log(2 * mpmath.pi)
        - mpmath.log(mpmath.besseli(nu, k))
    )
    loc = _e1(dim)
    for w in (1.0, 0.5, -1.0):
        x = torch.zeros(dim, dtype=torch.float64)
        x[0], x[1] = w, math.sqrt(1 - w * w)
        expected = float(log_c + k * mpmath.mpf(w))
        for dtype, rel in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            d = VonMisesFisher(loc.to(dtype), torch.tensor(kappa, dtype=dtype))
            got = d.log_prob(x.to(dtype)).item()
            assert got == pytest.approx(expected, rel=rel, abs=rel), (dtype, w)


@pytest.mark.parametrize("dim", [3, 5, 10])
@pytest.mark.parametrize("kappa", [0.1, 1.0, 10.0, 100.0])
def test_entropy_against_scipy(dim, kappa):
    loc = normalize(torch.arange(1.0, dim + 1, dtype=torch.float64), dim=0)
    expected = scipy.stats.vonmises_fisher(loc.numpy(), kappa).entropy()
    assert np.isfinite(expected)
    got = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).entropy().item()
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dim", [2, 3, 10, 500])
def test_small_concentration_approaches_uniform(dim):
    loc = _e1(dim)
    uniform = HypersphericalUniform(dim, dtype=torch.float64)
    z = uniform.sample((100,))
    previous = None
    for kappa in (1e-2, 1e-4, 1e-6, 1e-8):
        d = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64))
        gap = (d.log_prob(z) - uniform.log_prob(z)).abs().max().item()
        kl = torch.distributions.kl_divergence(d, uniform).item()
        assert gap <= 2 * kappa
        assert 0 <= kl <= kappa * kappa / dim
        assert d.entropy().item() == pytest.approx(log_sphere_area(dim), abs=kappa * kappa)
        if previous is not None:
            assert gap < previous
        previous = gap


@pytest.mark.parametrize("dim", [2, 3, 100, 2048])
@pytest.mark.parametrize("kappa", [1e-8, 1e-2, 1e4, 1e7])
def test_float32_extremes_are_finite(dim, kappa):
    loc = normalize(torch.randn(4, dim), dim=-1).requires_grad_()
    concentration = torch.full((4,), kappa).requires_grad_()
    d = VonMisesFisher(loc, concentration)
    z = d.rsample((8,))
    assert z.dtype == torch.float32
    assert (z.norm(dim=-1) - 1).abs().max() < 1e-5
    kl = torch.distributions.kl_divergence(d, HypersphericalUniform(dim))
    total = d.log_prob(z.detach()).sum() + d.entropy().sum() + kl.sum() + z.sum()
    for value in (d.log_prob(z.detach()), d.entropy(), kl, d.mean):
        assert torch.isfinite(value).all()
    grads = torch.autograd.grad(total, (loc, concentration))
    assert all(torch.isfinite(g).all() for g in grads)


def test_mh_sampler_bias_decays_with_steps():
    """The MH variant is approximate: biased with 0 steps, unbiased within 4 SE after 10."""
    torch.manual_seed(11)
    dim, kappa, n = 10, 10.0, 200000
    a = vmf_mean_resultant(dim, torch.tensor(kappa, dtype=torch.float64)).item()
    loc = _e1(dim)
    z_scores = {}
    for steps in (0, 10):
        d = VonMisesFisher(
            loc, torch.tensor(kappa, dtype=torch.float64), sampler="mh", mh_steps=steps
        )
        w = d.sample((n,))[:, 0]
        z_scores[steps] = (w.mean().item() - a) / (w.std().item() / math.sqrt(n))
    assert abs(z_scores[0]) > 20
    assert abs(z_scores[10]) < 4


def test_mh_sampler_gradient():
    torch.manual_seed(12)
    dim, kappa, n = 5, 4.0, 100000
    concentration = torch.full((n,), kappa, dtype=torch.float64, requires_grad=True)
    d = VonMisesFisher(_e1(dim).expand(n, dim), concentration, sampler="mh", mh_steps=10)
    (grad,) = torch.autograd.grad(d.rsample()[:, 0].sum(), concentration)
    a = vmf_mean_resultant(dim, torch.tensor(kappa, dtype=torch.float64)).item()
    exact = 1.0 - a * a - (dim - 1) * a / kappa
    assert abs(grad.mean().item() - exact) <= 4 * grad.std().item() / math.sqrt(n)


def test_bad_sampler_arguments():
    loc = _e1(3)
    with pytest.raises(ValueError, match="sampler"):
        VonMisesFisher(loc, 1.0, sampler="rejection-ish")
    with pytest.raises(ValueError, match="mh_steps"):
        VonMisesFisher(loc, 1.0, sampler="mh", mh_steps=-1)


def test_mean_mode_and_python_float_concentration():
    loc = normalize(torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64), dim=0)
    d = VonMisesFisher(loc, 2.5)
    assert d.batch_shape == ()
    torch.testing.assert_close(d.mode, loc)
    a = vmf_mean_resultant(3, torch.tensor(2.5, dtype=torch.float64))
    torch.testing.assert_close(d.mean, a * loc)
    # A_3(k) = coth(k) - 1/k
    assert a.item() == pytest.approx(1 / math.tanh(2.5) - 1 / 2.5, rel=1e-13)

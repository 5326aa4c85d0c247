"""Generic tests run on every registered sphere distribution (see conftest.CASES).

Statistical checks use fixed seeds and 4-standard-error tolerances (a per-check false-failure rate of
about 6e-5 were the seed drawn at random).
"""

from __future__ import annotations

import math
import pickle
import re

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import ExpandedDistribution, constraints
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_svae.distributions import HypersphericalUniform
from pyro_svae.ops import log_sphere_area

from .conftest import CASE_IDS, CASES

DTYPES = [torch.float32, torch.float64]
PARAM_CASES = [case for case in CASES if case.params]
each_case = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
each_parametrised_case = pytest.mark.parametrize(
    "case", PARAM_CASES, ids=[case.name for case in PARAM_CASES]
)


@each_case
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("sample_shape", [(), (4,), (2, 5)])
def test_shapes_support_dtype(case, dtype, batch_shape, sample_shape):
    d = case.make(batch_shape, dtype)
    assert d.batch_shape == batch_shape
    assert d.event_shape == (case.dim,)
    z = d.rsample(sample_shape)
    assert z.shape == sample_shape + batch_shape + (case.dim,)
    assert z.dtype == dtype
    assert bool(constraints.sphere.check(z).all())
    assert bool(d.support.check(z).all())
    log_p = d.log_prob(z)
    assert log_p.shape == sample_shape + batch_shape
    assert log_p.dtype == dtype
    assert torch.isfinite(log_p).all()
    assert d.entropy().shape == batch_shape
    assert d.mean.shape == (*batch_shape, case.dim)


@each_case
def test_log_prob_broadcasts_values(case):
    d = case.make((3,), torch.float64)
    z = d.sample((5, 1))  # shape (5, 1, 3, m) -> broadcast against batch (3,)
    assert d.log_prob(z).shape == (5, 1, 3)
    assert d.log_prob(z[:, :, :1]).shape == (5, 1, 3)


@each_case
def test_expand(case):
    d = case.make((3,), torch.float64)
    e = d.expand((2, 3))
    assert type(e) is type(d)
    assert e.batch_shape == (2, 3)
    z = e.sample()
    assert z.shape == (2, 3, case.dim)
    torch.testing.assert_close(e.log_prob(z), d.log_prob(z))
    torch.testing.assert_close(e.entropy(), d.entropy().expand(2, 3))
    with pytest.raises((ValueError, RuntimeError)):
        d.expand((4,))


@each_case
def test_expand_inside_plate_keeps_class(case):
    d = case.make((), torch.float64)

    def model():
        with pyro.plate("data", 7):
            pyro.sample("z", d)

    site = poutine.trace(model).get_trace().nodes["z"]
    assert type(site["fn"]) is type(d), "plate must not wrap the site in an ExpandedDistribution"
    assert not isinstance(site["fn"], ExpandedDistribution)
    assert site["value"].shape == (7, case.dim)


@each_case
def test_infer_shapes(case):
    d = case.make((2, 3), torch.float64)
    if not case.params:
        assert type(d).infer_shapes(case.dim, (2, 3)) == ((2, 3), (case.dim,))
        return
    shapes = {name: getattr(d, name).shape for name in case.params}
    batch_shape, event_shape = type(d).infer_shapes(**shapes)
    assert batch_shape == d.batch_shape
    assert event_shape == d.event_shape


@each_case
def test_pickle_round_trip(case):
    d = case.make((3,), torch.float64)
    z = d.sample((4,))
    clone = pickle.loads(pickle.dumps(d))
    assert type(clone) is type(d)
    torch.testing.assert_close(clone.log_prob(z), d.log_prob(z))


@each_case
def test_entropy_matches_monte_carlo(case):
    torch.manual_seed(0)
    d = case.make((3,), torch.float64)
    n = 40000
    log_p = d.log_prob(d.sample((n,)))
    mc, se = -log_p.mean(0), log_p.std(0) / math.sqrt(n)
    assert ((mc - d.entropy()).abs() <= 4 * se + 1e-10).all(), (mc, d.entropy(), se)


@each_case
def test_mean_matches_samples(case):
    torch.manual_seed(1)
    d = case.make((3,), torch.float64)
    n = 40000
    z = d.sample((n,))
    se = z.std(0) / math.sqrt(n)
    assert ((z.mean(0) - d.mean).abs() <= 4 * se + 1e-10).all()


@each_case
def test_log_prob_normalised(case):
    """Importance sampling from the uniform: E_U[p(z)] |S^{m-1}| = 1."""
    torch.manual_seed(2)
    d = case.make((), torch.float64)
    u = HypersphericalUniform(case.dim, dtype=torch.float64).sample((400000,))
    ratio = torch.exp(d.log_prob(u) + log_sphere_area(case.dim))
    se = ratio.std() / math.sqrt(ratio.numel())
    assert abs(ratio.mean() - 1.0) <= 4 * se + 1e-12, (ratio.mean(), se)


@each_case
def test_kl_to_uniform(case):
    torch.manual_seed(3)
    d = case.make((3,), torch.float64)
    prior = HypersphericalUniform(case.dim, dtype=torch.float64)
    kl = kl_divergence(d, prior)
    assert kl.shape == (3,)
    assert (kl >= -1e-12).all()
    n = 40000
    log_ratio = d.log_prob(d.sample((n,))) - prior.log_prob(d.sample((1,)))
    se = log_ratio.std(0) / math.sqrt(n)
    assert ((log_ratio.mean(0) - kl).abs() <= 4 * se + 1e-10).all()
    with pytest.raises(ValueError, match="different spheres"):
        kl_divergence(d, HypersphericalUniform(case.dim + 1, dtype=torch.float64))


@each_case
def test_trace_mean_field_uses_analytic_kl(case):
    """With no likelihood the mean-field ELBO loss is exactly the analytic KL (no sampling noise)."""
    d = case.make((5,), torch.float64)

    def model():
        with pyro.plate("data", 5):
            pyro.sample("z", HypersphericalUniform(case.dim, dtype=torch.float64))

    def guide():
        with pyro.plate("data", 5):
            pyro.sample("z", d)

    expected = kl_divergence(d, HypersphericalUniform(case.dim, dtype=torch.float64)).sum()
    losses = []
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        losses.append(TraceMeanField_ELBO().loss(model, guide))
    assert losses[0] == pytest.approx(expected.item(), rel=1e-10, abs=1e-10)
    assert losses[1] == losses[0]


@each_parametrised_case
def test_rsample_gradients_finite(case):
    raw = {
        name: getattr(case.make((4,), torch.float64), name).detach().clone().requires_grad_()
        for name in case.params
    }
    d = type(case.make((4,), torch.float64))(**raw)
    target = torch.randn(case.dim, dtype=torch.float64)
    (d.rsample((50,)) @ target).sum().backward()
    for name, tensor in raw.items():
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name


@each_case
def test_validation_errors(case):
    d = case.make((3,), torch.float64)
    with pytest.raises(ValueError, match=re.escape(f"(..., {case.dim})")):
        d.log_prob(torch.ones(3, case.dim + 1, dtype=torch.float64))
    off_sphere = 2.0 * d.sample()
    with pytest.raises(ValueError, match=r"support|constraint|sphere"):
        d.log_prob(off_sphere)
    if not case.params:
        with pytest.raises(ValueError, match="dim"):
            type(d)(1)
        return
    loc, concentration = d.loc, getattr(d, case.params[1])
    cls = type(d)
    with pytest.raises(ValueError, match="loc"):
        cls(2.0 * loc, concentration, validate_args=True)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=case.params[1]):
            cls(loc, torch.full_like(concentration, bad), validate_args=True)
    with pytest.raises(ValueError, match=case.params[1]):
        cls(loc, concentration[:2], validate_args=True)  # batch (3,) vs (2,)
    with pytest.raises(ValueError, match="trailing singleton"):
        cls(loc, concentration.unsqueeze(-1), validate_args=True)
    with pytest.raises(ValueError, match="loc"):
        cls(loc[..., :1], concentration, validate_args=True)  # S^0 is not supported

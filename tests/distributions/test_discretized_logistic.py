"""DiscretizedLogistic: a normalised pmf on the grey levels, exact for narrow bins, samples that match it."""

from __future__ import annotations

import mpmath
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_svae.distributions import DiscretizedLogistic

GRID = torch.arange(256, dtype=torch.float64) / 255


@pytest.mark.parametrize(("loc", "scale"), [(0.5, 0.1), (-0.3, 0.05), (1.2, 0.2), (0.3, 1e-4)])
def test_probabilities_sum_to_one(loc, scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale))
    total = torch.logsumexp(d.log_prob(GRID), 0).exp()
    assert total.item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("loc", "scale", "k"), [(0.5, 1e-5, 128), (0.5, 1e-5, 127), (0.2, 3.0, 51)]
)
def test_log_prob_exact_for_narrow_and_wide_bins(loc, scale, k):
    """Against mpmath: no cancellation however the bin width compares with the scale."""
    mpmath.mp.dps = 50
    x = mpmath.mpf(k) / 255
    half = mpmath.mpf(1) / 510

    def sigma(v):
        return 1 / (1 + mpmath.exp(-v))

    expected = mpmath.log(
        sigma((x + half - mpmath.mpf(loc)) / mpmath.mpf(scale))
        - sigma((x - half - mpmath.mpf(loc)) / mpmath.mpf(scale))
    )
    d = DiscretizedLogistic(
        torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)
    )
    ours = d.log_prob(torch.tensor(k / 255, dtype=torch.float64)).item()
    assert ours == pytest.approx(float(expected), rel=1e-10, abs=1e-12)


def test_end_bins_take_the_tails():
    d = DiscretizedLogistic(torch.tensor(-5.0, dtype=torch.float64), torch.tensor(0.1))
    assert d.log_prob(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(
        0.0, abs=1e-12
    )
    d = DiscretizedLogistic(torch.tensor(5.0, dtype=torch.float64), torch.tensor(0.1))
    assert d.log_prob(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(
        0.0, abs=1e-12
    )


def test_gradients_are_finite_for_tiny_scales_and_end_bins():
    loc = torch.tensor([0.0, 0.5, 1.0, 0.3], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1e-6, 1e-6, 1e-6, 50.0], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([0.0, 128 / 255, 1.0, 0.0], dtype=torch.float64)
    DiscretizedLogistic(loc, scale).log_prob(x).sum().backward()
    assert torch.isfinite(loc.grad).all()
    assert torch.isfinite(scale.grad).all()


def test_samples_match_the_probabilities():
    """Chi-square over the bins with mass: fixed seed; the 1e-6 threshold fails a correct sampler
    with probability 1e-6."""
    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.05))
    n = 200_000
    samples = d.sample((n,))
    assert d.support.check(samples).all()
    counts = torch.bincount((samples * 255).round().long(), minlength=256).double()
    expected = n * d.log_prob(GRID).exp()
    keep = expected > 5
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    dof = int(keep.sum()) - 1
    from scipy.stats import chi2

    assert chi2.sf(stat, dof) > 1e-6, (stat, dof)


def test_mean_and_variance_are_the_exact_sums():
    loc = torch.tensor([0.05, 0.51, 0.97], dtype=torch.float64)
    scale = torch.tensor([0.1, 0.02, 0.3], dtype=torch.float64)
    d = DiscretizedLogistic(loc, scale)
    p = d.log_prob(GRID.unsqueeze(-1)).exp()  # (256, 3)
    mean = (p * GRID.unsqueeze(-1)).sum(0)
    var = (p * GRID.unsqueeze(-1) ** 2).sum(0) - mean**2
    torch.testing.assert_close(d.mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.variance, var, rtol=1e-8, atol=1e-12)
    # the mode is the most probable level: the end bin at 1 holds the heavy upper tail of the third
    torch.testing.assert_close(d.mode, GRID[p.argmax(0)])
    assert d.mode[2].item() == 1.0


def test_validation_names_the_problem():
    with pytest.raises(ValueError, match="scale"):
        DiscretizedLogistic(torch.zeros(2), torch.tensor([1.0, -1.0]), validate_args=True)
    with pytest.raises(ValueError, match="num_bins"):
        DiscretizedLogistic(0.0, 1.0, num_bins=1)
    d = DiscretizedLogistic(torch.zeros(2), torch.ones(2), validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor([0.5, 0.501]))  # 0.501 is not a grey level


def test_expand_inside_plates_keeps_the_class():
    d = DiscretizedLogistic(torch.zeros(5), torch.ones(5)).to_event(1)

    def model():
        with pyro.plate("data", 3, dim=-1):
            return pyro.sample("x", DiscretizedLogistic(torch.zeros(5), torch.ones(5)).to_event(1))

    trace = pyro.poutine.trace(model).get_trace()
    fn = trace.nodes["x"]["fn"]
    assert isinstance(fn, dist.Independent)
    assert isinstance(fn.base_dist, DiscretizedLogistic)
    assert fn.batch_shape == (3,)
    assert fn.event_shape == (5,)
    assert d.expand((4,)).batch_shape == (4,)


def test_variance_is_never_negative_and_support_is_discrete():
    """float32 ``E[X^2] - E[X]^2`` dips below 0 (by up to ~3e-7) for near point masses: clamped."""
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(10000, generator=g) * 1.2 - 0.1
    scale = 10 ** (-6 * torch.rand(10000, generator=g))
    d = DiscretizedLogistic(loc, scale)
    assert (d.variance >= 0).all()
    exact = DiscretizedLogistic(loc.double(), scale.double()).variance
    assert (d.variance.double() - exact).abs().max() < 1e-6
    assert d.support.is_discrete

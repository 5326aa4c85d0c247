"""Importance-sampled log-likelihood and k-NN accuracy."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.nn.functional import normalize

from pyro_svae.infer import evaluate, importance_log_likelihood, knn_accuracy


def _f64(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(_f64(0.0), _f64(1.0)))
        pyro.sample("x", dist.Normal(z, _f64(1.0)), obs=x)


def _exact_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2, _f64(0.5).sqrt()))


def _poor_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 3, _f64(1.0)))


def _exact_log_likelihood(x):
    return dist.Normal(_f64(0.0), _f64(2.0).sqrt()).log_prob(x)


@pytest.mark.parametrize(("num_samples", "chunk_size"), [(1, 1), (7, 3), (500, 100)])
def test_exact_posterior_gives_exact_log_likelihood(num_samples, chunk_size):
    """With q = p(z | x) every importance weight equals p(x): the estimate is exact for any S."""
    x = torch.linspace(-3, 3, 11, dtype=torch.float64)
    ll = importance_log_likelihood(
        _model, _exact_guide, x, num_samples=num_samples, chunk_size=chunk_size
    )
    assert ll.shape == (11,)
    torch.testing.assert_close(ll, _exact_log_likelihood(x), rtol=1e-12, atol=1e-12)


def test_poor_guide_converges_and_bounds_elbo():
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)
    ll = importance_log_likelihood(_model, _poor_guide, x, num_samples=20000, chunk_size=5000)
    torch.testing.assert_close(ll, _exact_log_likelihood(x), rtol=0, atol=5e-3)
    # 2000 points so that the one-sample reconstruction term averages out (its s.e. is ~0.02)
    many = x.repeat(400)
    result = evaluate(_model, _poor_guide, [many[:1000], many[1000:]], num_samples=200)
    exact = _exact_log_likelihood(x).mean().item()
    assert result["elbo"] < result["ll"] - 0.05
    assert result["ll"] == pytest.approx(exact, abs=0.01)
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"])


def test_evaluate_without_ll_and_errors():
    x = torch.zeros(4, dtype=torch.float64)
    assert math.isnan(evaluate(_model, _exact_guide, [x], num_samples=0)["ll"])
    with pytest.raises(ValueError, match="no data"):
        evaluate(_model, _exact_guide, [])
    with pytest.raises(ValueError, match="positive"):
        importance_log_likelihood(_model, _exact_guide, x, num_samples=0)

    def unplated_model(x):
        z = pyro.sample("z", dist.Normal(_f64(0.0), _f64(1.0)).expand(x.shape).to_event(1))
        pyro.sample("x", dist.Normal(z, _f64(1.0)).to_event(1), obs=x)

    def unplated_guide(x):
        pyro.sample("z", dist.Normal(_f64(0.0), _f64(1.0)).expand(x.shape).to_event(1))

    with pytest.raises(ValueError, match="plate named 'data'"):
        importance_log_likelihood(unplated_model, unplated_guide, x, num_samples=2)


def _clusters(n_per_class: int, centres: torch.Tensor, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    feats = [
        normalize(c + spread * torch.randn(n_per_class, c.shape[0], generator=g), dim=-1)
        for c in centres
    ]
    labels = torch.arange(len(centres)).repeat_interleave(n_per_class)
    return torch.cat(feats), labels


@pytest.mark.parametrize("metric", ["geodesic", "cosine", "euclidean"])
def test_knn_separates_clusters(metric):
    centres = torch.eye(5)
    train, train_y = _clusters(40, centres, 0.1, seed=0)
    test, test_y = _clusters(20, centres, 0.1, seed=1)
    assert knn_accuracy([train], train_y, [test], test_y, num_labelled=100, metric=metric) == 1.0


def test_knn_random_labels_is_near_chance_and_products_add_distances():
    train, _ = _clusters(200, torch.eye(4), 1.0, seed=0)
    test, _ = _clusters(100, torch.eye(4), 1.0, seed=1)
    g = torch.Generator().manual_seed(3)
    train_y = torch.randint(0, 4, (800,), generator=g)
    test_y = torch.randint(0, 4, (400,), generator=g)
    accuracy = knn_accuracy([train], train_y, [test], test_y)
    assert 0.15 < accuracy < 0.35
    # a product whose second factor carries the label is classified by it
    informative, informative_y = _clusters(100, torch.eye(4), 0.05, seed=4)
    noise, _ = _clusters(100, torch.eye(4), 1.0, seed=5)
    noise = noise[torch.randperm(400, generator=g)]
    order = torch.randperm(400, generator=g)
    informative, informative_y = informative[order], informative_y[order]
    acc = knn_accuracy(
        [noise[:300], informative[:300]],
        informative_y[:300],
        [noise[300:], informative[300:]],
        informative_y[300:],
    )
    assert acc > 0.9


def test_knn_validates_arguments():
    feats, labels = _clusters(5, torch.eye(3), 0.1, seed=0)
    with pytest.raises(ValueError, match="metric"):
        knn_accuracy([feats], labels, [feats], labels, metric="manhattan")
    with pytest.raises(ValueError, match="num_labelled"):
        knn_accuracy([feats], labels, [feats], labels, num_labelled=100)


def test_bernoulli_direct_score_matches_log_prob_for_a_well_fitted_decoder():
    """The direct Bernoulli path of the importance estimator equals ``log_prob`` to float32 rounding,
    also where large logits agree with the data (sums of ``x l`` and ``softplus(l)`` cancel)."""
    from pyro_svae.infer.evaluation import _site_log_prob

    g = torch.Generator().manual_seed(0)
    logits = 15 * torch.randn(16, 50, 784, generator=g)
    x = (torch.rand(16, 50, 784, generator=g) < torch.sigmoid(logits)).float()
    fn = dist.Bernoulli(logits=logits).to_event(1)
    exact = dist.Bernoulli(logits=logits.double()).to_event(1).log_prob(x.double())
    ours = _site_log_prob(fn, x)
    assert ours.shape == (16, 50)
    assert ours.dtype == torch.float32
    # log_prob's own float32 error here is ~2e-5; summing x l and softplus(l) apart gives ~1e-3
    assert (ours.double() - exact).abs().max() < 1e-4
    assert (fn.log_prob(x).double() - exact).abs().max() < 1e-4
    unbatched = dist.Bernoulli(logits=logits[0, 0])  # elementwise: within an ulp of the logit
    exact = dist.Bernoulli(logits=logits[0, 0].double()).log_prob(x[0, 0].double())
    assert (_site_log_prob(unbatched, x[0, 0]).double() - exact).abs().max() < 4e-6

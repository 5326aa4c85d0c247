"""AnnealedELBO: β scaling, warm-up, capacity annealing and the analytic / Monte-Carlo KL switch."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import Adam
from torch.nn.functional import normalize

from pyro_svae.distributions import PowerSpherical
from pyro_svae.infer import AnnealedELBO, CapacitySchedule
from pyro_svae.models import VAE


def _vae_and_data(latent: str = "vmf:4,4"):
    torch.manual_seed(0)
    x = (torch.rand(32, 20) < 0.4).float()
    return VAE(latent, 20, hidden=(16,)), x


def _loss_with_seed(elbo, vae, x, seed=0, **kwargs):
    pyro.set_rng_seed(seed)
    loss = elbo.loss(vae.model, vae.guide, x, **kwargs)
    return loss, elbo.last_terms


def test_beta_one_equals_trace_mean_field_elbo():
    vae, x = _vae_and_data()
    ours, _ = _loss_with_seed(AnnealedELBO(), vae, x)
    pyro.set_rng_seed(0)
    reference = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    assert ours == pytest.approx(reference, rel=1e-6)


def test_beta_scales_only_the_kl():
    vae, x = _vae_and_data()
    loss1, terms1 = _loss_with_seed(AnnealedELBO(beta=1.0), vae, x)
    loss3, terms3 = _loss_with_seed(AnnealedELBO(beta=3.0), vae, x)
    assert terms1.kl == pytest.approx(terms3.kl)
    assert terms1.kl > 0
    assert loss3 - loss1 == pytest.approx(2.0 * terms1.kl, rel=1e-5)
    assert loss1 == pytest.approx(-terms1.reconstruction + terms1.kl, rel=1e-6)


def test_warmup_is_linear_in_steps_and_driven_by_svi():
    vae, x = _vae_and_data()
    elbo = AnnealedELBO(beta=2.0, warmup_steps=4)
    assert elbo.kl_weight() == 0.0
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), elbo)
    weights = []
    for _ in range(6):
        svi.step(x)
        weights.append(elbo.last_terms.kl_weight)
    assert weights == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    elbo.set_step(1)
    assert elbo.kl_weight() == pytest.approx(0.5)


def test_capacity_rises_and_enters_the_loss():
    """The capacity C_t must change with the step (the public ΔVAE code's never did)."""
    vae, x = _vae_and_data()
    schedule = CapacitySchedule(c_min=0.0, c_max=5.0, steps=10)
    elbo = AnnealedELBO(beta=1.5, capacity=schedule)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), elbo)
    capacities = []
    for _ in range(12):
        svi.step(x)
        capacities.append(elbo.last_terms.capacity)
    assert capacities[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert capacities[-2:] == pytest.approx([5.0, 5.0])
    # the loss is -R + beta N |KL/N - C|
    loss, terms = _loss_with_seed(elbo, vae, x)
    n = x.shape[0]
    expected = -terms.reconstruction + 1.5 * n * abs(terms.kl / n - 5.0)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert terms.kl / n < 5.0  # so the penalty pushes KL up: it differs from the plain beta-ELBO
    plain, _ = _loss_with_seed(AnnealedELBO(beta=1.5), vae, x)
    assert loss != pytest.approx(plain, rel=1e-3)


def test_capacity_uses_data_set_size_under_subsampling():
    vae, x = _vae_and_data()
    elbo = AnnealedELBO(capacity=CapacitySchedule(2.0, 2.0, 0))
    loss, terms = _loss_with_seed(elbo, vae, x, num_data=320)
    expected = -terms.reconstruction + 320 * abs(terms.kl / 320 - 2.0)
    assert loss == pytest.approx(expected, rel=1e-6)


def test_kl_modes():
    vae, x = _vae_and_data("ps:3")
    _analytic, terms_a = _loss_with_seed(AnnealedELBO(kl="analytic"), vae, x)
    mc_losses = [_loss_with_seed(AnnealedELBO(kl="mc"), vae, x, seed=s)[1].kl for s in range(2)]
    assert mc_losses[0] != mc_losses[1]  # Monte Carlo: seed dependent
    assert _loss_with_seed(AnnealedELBO(kl="analytic"), vae, x, seed=5)[1].kl == pytest.approx(
        terms_a.kl
    )

    def model():
        with pyro.plate("data", 3):
            pyro.sample("z", PowerSpherical(normalize(torch.ones(3, 4), dim=-1), torch.ones(3)))

    def guide():
        with pyro.plate("data", 3):
            pyro.sample(
                "z",
                PowerSpherical(
                    normalize(torch.arange(12.0).reshape(3, 4), dim=-1), 2 * torch.ones(3)
                ),
            )

    with pytest.raises(NotImplementedError, match="no closed-form KL"):
        AnnealedELBO(kl="analytic").loss(model, guide)
    assert torch.isfinite(torch.tensor(AnnealedELBO(kl="auto").loss(model, guide)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"beta": -1.0}, "beta"), ({"warmup_steps": -2}, "warmup"), ({"kl": "exact"}, "kl must be")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnnealedELBO(**kwargs)
    with pytest.raises(ValueError, match="capacity"):
        CapacitySchedule(-1.0, 2.0, 3)


def test_capacity_needs_a_data_plate():
    def model():
        pyro.sample("z", PowerSpherical(normalize(torch.ones(4), dim=-1), torch.tensor(1.0)))

    def guide():
        pyro.sample("z", PowerSpherical(normalize(torch.ones(4), dim=-1), torch.tensor(2.0)))

    with pytest.raises(ValueError, match="plate named 'data'"):
        AnnealedELBO(capacity=CapacitySchedule(1.0, 1.0, 0)).loss(model, guide)

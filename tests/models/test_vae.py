"""The VAE's Pyro model and guide: structure, composition with Pyro, and evaluation correctness."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample

from pyro_svae.infer import AnnealedELBO, importance_log_likelihood
from pyro_svae.models import VAE
from pyro_svae.ops import log_sphere_area

SPECS = ["vmf:4,4", "vmf:9", "ps:2,2,2", "vmf:4,1", "normal:10", "vmf:2+normal:3"]


def _binary(n: int = 24, d: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) < 0.3).float()


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_svi_step_and_site_structure(spec, covariance):
    x = _binary()
    vae = VAE(spec, x.shape[1], hidden=(16, 8), covariance=covariance)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), AnnealedELBO())
    losses = [svi.step(x, num_data=240) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    trace = poutine.trace(vae.guide).get_trace(x)
    names = [
        n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
    ]
    assert tuple(names) == vae.site_names
    total = 0
    for group, name in zip(vae.groups, vae.site_names, strict=True):
        value = trace.nodes[name]["value"]
        if group.family != "normal" and group.count > 1:
            assert value.shape == (group.count, x.shape[0], group.ambient_dim)
            frames = {f.name: f.dim for f in trace.nodes[name]["cond_indep_stack"]}
            assert frames == {"data": -1, f"{name}_factors": -2}
        else:
            assert value.shape == (x.shape[0], group.ambient_dim)
        total += group.size
    assert total == vae.spec.ambient_dim
    model_trace = poutine.trace(poutine.replay(vae.model, trace=trace)).get_trace(x)
    assert model_trace.nodes["x"]["fn"].batch_shape[-1] == x.shape[0]


def test_num_data_scales_the_loss():
    x = _binary()
    vae = VAE("vmf:4,4", x.shape[1], hidden=(16,))
    pyro.set_rng_seed(3)
    full = AnnealedELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    scaled = AnnealedELBO().loss(vae.model, vae.guide, x, num_data=10 * x.shape[0])
    assert scaled == pytest.approx(10 * full, rel=1e-5)


def test_zero_encoder_output_gives_a_valid_posterior():
    x = _binary()
    vae = VAE("vmf:4,4", x.shape[1], hidden=(8,))
    for head in vae.heads:
        torch.nn.init.zeros_(head.linear.weight)
        torch.nn.init.zeros_(head.linear.bias)
    (fn,) = vae.posteriors(x)
    assert torch.isfinite(fn.loc).all()
    torch.testing.assert_close(fn.loc.norm(dim=-1), torch.ones(2, x.shape[0]))
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)


def _manual_log_weights(vae: VAE, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) written out by hand for 'vmf:4,4' (uniform priors)."""
    (q,) = vae.posteriors(x)
    z = q.sample((num_samples,))  # (S, K, N, m)
    log_q = q.log_prob(z).sum(1)  # (S, N)
    log_prior = -2 * log_sphere_area(5)
    decoder_input = z.permute(0, 2, 1, 3).reshape(num_samples, x.shape[0], 10)
    logits = vae.decode(decoder_input)
    log_lik = dist.Bernoulli(logits=logits).log_prob(x).sum(-1)
    return log_lik + log_prior - log_q


def test_importance_log_likelihood_matches_hand_written_estimate():
    torch.manual_seed(0)
    x = _binary(n=12)
    vae = VAE("vmf:4,4", x.shape[1], hidden=(16,))
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    for _ in range(30):
        svi.step(x)
    num_samples = 4000
    ours = importance_log_likelihood(
        vae.model, vae.guide, x, num_samples=num_samples, chunk_size=1000
    )
    log_w = _manual_log_weights(vae, x, num_samples)
    manual = torch.logsumexp(log_w, 0) - math.log(num_samples)
    # both estimate log p(x) with standard error ~ std(w)/(mean(w) sqrt(S)); allow 4 of them each
    weights = torch.exp(log_w - log_w.max(0).values)
    se = (weights.std(0) / weights.mean(0) / math.sqrt(num_samples)).detach()
    assert (ours - manual).abs().le(4 * math.sqrt(2) * se + 1e-6).all(), (ours - manual, se)
    elbo = -TraceMeanField_ELBO(
        num_particles=200, vectorize_particles=True, max_plate_nesting=2
    ).loss(vae.model, vae.guide, x)
    assert elbo / x.shape[0] <= ours.mean().item() + 1e-3


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (1, 28, 20)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "discretized_logistic"])
def test_convolutional_networks(image_shape, likelihood):
    d = math.prod(image_shape)
    x = torch.rand(6, d)
    if likelihood == "bernoulli":
        x = (x < 0.5).float()
    elif likelihood == "discretized_logistic":
        x = (x * 255).round() / 255
    vae = VAE(
        "vmf:4,4", d, arch="conv", image_shape=image_shape, hidden=(32,), likelihood=likelihood
    )
    loss = AnnealedELBO().differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    assert vae.reconstruct(x).shape == (6, d)
    assert vae.generate(5).shape == (5, d)


def test_discretized_logistic_vae_trains_and_gives_a_discrete_log_likelihood():
    """8-bit grey data: training improves the ELBO, and log p(x) <= 0 because p is a probability mass."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(4, 20, generator=g)
    x = (base[torch.arange(32) % 4] + 0.05 * torch.randn(32, 20, generator=g)).clamp(0, 1) * 255
    x = x.round() / 255
    vae = VAE("vmf:3", 20, hidden=(32,), likelihood="discretized_logistic")
    elbo = AnnealedELBO()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), elbo)
    first = svi.evaluate_loss(x)
    for _ in range(200):
        svi.step(x)
    assert svi.evaluate_loss(x) < first - 20 * x.shape[0]  # at least 20 nats per point better
    ll = importance_log_likelihood(vae.model, vae.guide, x, num_samples=200)
    assert torch.isfinite(ll).all()
    assert (ll <= 0).all()
    assert ((vae.reconstruct(x) >= 0) & (vae.reconstruct(x) <= 1)).all()


def test_global_noise_scale_with_autoguide_composes():
    """A decoder with a learned global noise scale and its own prior, fitted by AutoNormal + the VAE guide."""
    torch.manual_seed(1)
    x = torch.rand(40, 12)
    vae = VAE("vmf:3", x.shape[1], hidden=(16,), likelihood="gaussian")

    def model(x):
        pyro.module("vae", vae)
        sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(-1.0), torch.tensor(0.5)))
        with pyro.plate("data", x.shape[0]):
            z = vae.sample_latents(prior=True, like=x)
            mean = torch.sigmoid(vae.decode(z)[..., : x.shape[1]])
            pyro.sample("x", dist.Normal(mean, sigma).to_event(1), obs=x)

    global_guide = AutoNormal(poutine.block(model, expose=["sigma"]))

    def guide(x):
        global_guide(x)
        vae.guide(x)

    svi = SVI(model, guide, Adam({"lr": 2e-2}), TraceMeanField_ELBO())
    losses = [svi.step(x) for _ in range(60)]
    assert losses[-1] < losses[0]
    assert "AutoNormal.locs.sigma" in pyro.get_param_store()
    # Predictive draws the global and local latents and replicates the data
    predictive = Predictive(model, guide=guide, num_samples=3, return_sites=["sigma", "z", "x"])
    samples = predictive(x)
    assert samples["sigma"].shape[0] == 3
    assert samples["z"].shape == (3, x.shape[0], 4)
    # condition and scale compose too
    conditioned = poutine.condition(model, data={"sigma": torch.tensor(0.1)})
    trace = poutine.trace(poutine.scale(conditioned, scale=0.5)).get_trace(x)
    assert trace.nodes["sigma"]["value"] == 0.1
    assert trace.nodes["x"]["scale"] == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"likelihood": "poisson"}, "likelihood"),
        ({"covariance": "banded"}, "covariance"),
        ({"arch": "rnn"}, "arch"),
        ({"arch": "conv"}, "image_shape"),
        ({"min_concentration": -1.0}, "min_concentration"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE("vmf:4,4", 784, **kwargs)
    with pytest.raises(ValueError, match="vmf"):
        VAE("vmf:zero", 784)


def _param_names(fn, *args) -> set[str]:
    trace = poutine.trace(fn).get_trace(*args)
    return {name for name, site in trace.nodes.items() if site["type"] == "param"}


def test_guide_registers_every_parameter_and_model_the_decoder():
    x = _binary()
    vae = VAE("vmf:4,4", x.shape[1], hidden=(16, 8))
    every = {f"vae$$${path}" for path, _ in vae.named_parameters()}
    assert _param_names(vae.guide, x) == every
    assert _param_names(vae.model, x) == {n for n in every if n.startswith("vae$$$decoder.")}


def test_custom_model_with_the_vae_guide_trains_the_decoder():
    x = _binary()
    vae = VAE("vmf:3", x.shape[1], hidden=(16,))

    def model(x):  # no pyro.module: the guide's registration must cover the decoder
        with pyro.plate("data", x.shape[0]):
            z = vae.sample_latents(prior=True, like=x)
            pyro.sample("x", dist.Bernoulli(logits=vae.decode(z)).to_event(1), obs=x)

    before = {k: v.detach().clone() for k, v in vae.decoder.state_dict().items()}
    svi = SVI(model, vae.guide, Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    for _ in range(3):
        svi.step(x)
    for key, value in vae.decoder.state_dict().items():
        assert not torch.equal(value, before[key]), key


def test_registration_follows_parameter_changes():
    x = _binary()
    vae = VAE("vmf:3", x.shape[1], hidden=(16,))
    assert _param_names(vae.guide, x)  # fills the cache
    # frozen parameters are not registered; unfreezing them later registers them again
    vae.encoder.requires_grad_(False)
    assert not any(
        ".encoder." in n or n.startswith("vae$$$encoder") for n in _param_names(vae.guide, x)
    )
    vae.encoder.requires_grad_(True)
    assert any(n.startswith("vae$$$encoder") for n in _param_names(vae.guide, x))
    # new parameter objects (load_state_dict(assign=True)): as with pyro.module, the param store
    # keeps its tensors under the old names until it is cleared; then the new objects are registered
    old = dict(vae.named_parameters())
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    vae.load_state_dict(state, assign=True)
    trace = poutine.trace(vae.guide).get_trace(x)
    for path, value in vae.named_parameters():
        assert value is not old[path]
        assert trace.nodes[f"vae$$${path}"]["value"] is old[path]  # the store's
    pyro.clear_param_store()
    trace = poutine.trace(vae.guide).get_trace(x)
    for path, value in vae.named_parameters():
        assert trace.nodes[f"vae$$${path}"]["value"] is value
    # a new name gives new parameter names
    vae.name = "other"
    assert all(n.startswith("other$$$") for n in _param_names(vae.guide, x))

"""
A hyperspherical VAE with SVI, step by step
===========================================

We write a VAE with a latent space on the sphere :math:`S^9 \\subset \\mathbb{R}^{10}` by hand, as a
Pyro ``model`` and ``guide``. We train it on dynamically binarised MNIST with stochastic variational
inference (SVI), using the analytic KL of ``TraceMeanField_ELBO``. Then we evaluate its marginal
log-likelihood by importance sampling, first by hand and then with
:func:`pyro_svae.infer.importance_log_likelihood`.

:class:`pyro_svae.models.VAE` packages the same model (``VAE("vmf:9", data_dim=784)``). This
tutorial shows what it does.

Run it with ``python docs/tutorials/tutorial_02_svi_vae.py``. The MNIST files are read from
``$PYRO_SVAE_DATA``. The full run takes 2 to 3 minutes on one CPU thread; ``PYRO_SVAE_SMOKE=1``
trains for a few seconds only.
"""

# %%
# Set-up
# ------

import math
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_svae.data import load_dataset
from pyro_svae.distributions import HypersphericalUniform, VonMisesFisher
from pyro_svae.infer import evaluate, importance_log_likelihood
from pyro_svae.viz import image_grid

SMOKE = os.environ.get("PYRO_SVAE_SMOKE") == "1"
OUT = Path(os.environ.get("PYRO_SVAE_OUT") or tempfile.mkdtemp(prefix="pyro_svae_tutorial_02_"))
OUT.mkdir(parents=True, exist_ok=True)
NUM_STEPS = 150 if SMOKE else 6000  # SVI steps of 100 images (6000: 12 epochs of 50000 images)
NUM_TEST = 200 if SMOKE else 2000  # test images used for the evaluation
NUM_IS_SAMPLES = 50 if SMOKE else 500  # importance samples per test image
pyro.set_rng_seed(0)
pyro.enable_validation(True)  # Pyro checks shapes and supports: worth it while developing

# %%
# The data
# --------
# :func:`~pyro_svae.data.load_dataset` reads the standard MNIST files. ``"dynamic_mnist"``
# binarises the training images afresh each time they are drawn (every pixel is a Bernoulli draw
# with its grey value as probability). The test split is binarised once, with a fixed seed, so that
# every run evaluates on the same data. ``train[idx]`` draws the images at the indices ``idx``.

train = load_dataset("dynamic_mnist", "train")
test = load_dataset("dynamic_mnist", "test")
print(train)
print(test)
x_test = test[torch.arange(NUM_TEST)]
N, D = len(train), train.dim  # 50000 training images (10000 are kept for validation), D = 784

# %%
# Networks
# --------
# The encoder maps an image to a mean direction (a unit vector in :math:`\mathbb{R}^{10}`) and a
# concentration :math:`\kappa > 0`. The decoder maps a point of the sphere to Bernoulli logits of
# the 784 pixels. These are the MLPs of the S-VAE paper (784-256-128 and back).

M = 10  # ambient dimension of the latent sphere S^9


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.loc = nn.Linear(128, M)
        self.concentration = nn.Linear(128, 1)

    def forward(self, x):
        h = self.body(x)
        loc = F.normalize(self.loc(h), dim=-1)  # on the sphere
        concentration = F.softplus(self.concentration(h)).squeeze(-1) + 1.0  # (N,), >= 1
        return loc, concentration


encoder = Encoder()
decoder = nn.Sequential(
    nn.Linear(M, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, D)
)

# %%
# Model and guide
# ---------------
# The **model** is the generative story :math:`p(x, z) = p(z)\,p(x \mid z)`: a latent point
# :math:`z` uniform on the sphere, then independent Bernoulli pixels. The **guide** is the
# amortised posterior :math:`q(z \mid x) = \mathrm{vMF}(\mu(x), \kappa(x))`. They share the site
# name ``"z"``, which is how SVI pairs the posterior with the prior.
#
# * ``pyro.module`` registers a network's parameters with Pyro's parameter store, so the optimiser
#   sees them: the decoder in the model, the encoder in the guide.
# * ``pyro.plate("data", N, subsample=idx)`` declares the data points conditionally independent.
#   Given the indices ``idx`` of a minibatch drawn from a data set of size ``N``, it scales the
#   minibatch's log densities and KLs by ``N / len(idx)``. The loss is then an unbiased estimate of
#   the loss on the whole data set. Without ``idx`` the plate covers just the batch, which is what
#   evaluation wants. ``dim=-1``: the data points index the rightmost batch dimension.
# * ``HypersphericalUniform(M)`` inside the plate is expanded to batch shape ``(len(x),)``;
#   ``.to_event(1)`` turns the 784 pixels into one event, so ``log_prob`` has one value per image.


def data_plate(x, idx):
    return pyro.plate("data", N if idx is not None else len(x), subsample=idx, dim=-1)


def model(x, idx=None):
    pyro.module("decoder", decoder)
    with data_plate(x, idx):
        z = pyro.sample("z", HypersphericalUniform(M, dtype=x.dtype, device=x.device))
        logits = decoder(z)
        pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
    return logits


def guide(x, idx=None):
    pyro.module("encoder", encoder)
    loc, concentration = encoder(x)
    with data_plate(x, idx):
        return pyro.sample("z", VonMisesFisher(loc, concentration))


# %%
# A trace records every site with its distribution and shape. ``format_shapes`` shows the batch
# and event shapes, a quick check of the plates:

trace = poutine.trace(guide).get_trace(x_test[:5])
trace = poutine.trace(poutine.replay(model, trace=trace)).get_trace(x_test[:5])
print(trace.format_shapes())
assert trace.nodes["z"]["value"].shape == (5, M)
assert trace.nodes["z"]["fn"].batch_shape == (5,)

# %%
# The ELBO
# --------
# SVI maximises the evidence lower bound
#
# .. math::
#     \mathrm{ELBO}(x) = \mathbb{E}_{q(z \mid x)}[\log p(x \mid z)]
#     - \mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big) \le \log p(x).
#
# ``Trace_ELBO`` estimates both terms from the sampled :math:`z`. ``TraceMeanField_ELBO`` uses a
# closed-form KL whenever one is registered for the (guide, prior) pair. ``pyro_svae`` registers
# :math:`\mathrm{KL}(\mathrm{vMF} \,\|\, U)`, so only the reconstruction term is left to Monte
# Carlo. Both losses have the same expectation, but the analytic one fluctuates less:

x = x_test[:100]
for elbo in (Trace_ELBO(max_plate_nesting=1), TraceMeanField_ELBO(max_plate_nesting=1)):
    losses = torch.tensor([elbo.loss(model, guide, x) for _ in range(20)])
    print(f"{type(elbo).__name__:20s} loss {losses.mean():9.2f} ± {losses.std():.2f} (std)")

# %%
# Training
# --------
# Every step draws a minibatch of 100 indices, binarises those images afresh and takes one Adam
# step on the scaled loss. ``svi.step`` returns the loss of that minibatch, scaled to the whole
# training set. We track the ELBO per test image, which does not depend on the minibatch noise.

svi = SVI(model, guide, Adam({"lr": 1e-3}), TraceMeanField_ELBO(max_plate_nesting=1))
evaluation_elbo = TraceMeanField_ELBO(
    num_particles=10, vectorize_particles=True, max_plate_nesting=1
)


def test_elbo():
    """ELBO per test image (10 samples of z per image)."""
    with torch.no_grad():
        return -evaluation_elbo.loss(model, guide, x_test) / NUM_TEST


history = [(0, test_elbo())]
print(f"step     0: test ELBO {history[0][1]:8.2f} nats per image")
generator = torch.Generator().manual_seed(0)
for step in range(1, NUM_STEPS + 1):
    idx = torch.randint(N, (100,), generator=generator)
    svi.step(train[idx], idx)
    if step % (NUM_STEPS // 5) == 0:
        history.append((step, test_elbo()))
        print(f"step {step:5d}: test ELBO {history[-1][1]:8.2f} nats per image")

assert history[-1][1] > history[0][1] + 50, "training must improve the ELBO"

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(*zip(*history, strict=True), marker="o")
ax.set(xlabel="SVI step", ylabel="test ELBO (nats per image)")
fig.tight_layout()
fig.savefig(OUT / "tutorial_02_elbo.png", dpi=100)

# %%
# What did it learn? Reconstructions (the decoder's mean at one posterior sample) and new images
# (the decoder's mean at prior samples, uniform on the sphere):

with torch.no_grad():
    loc, concentration = encoder(x_test[:16])
    reconstructions = torch.sigmoid(decoder(VonMisesFisher(loc, concentration).sample()))
    samples = torch.sigmoid(decoder(HypersphericalUniform(M).sample((32,))))
print("posterior concentrations of the first test images:", concentration[:8].round().tolist())

fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
grids = [torch.cat([x_test[:16], reconstructions]), samples]
titles = ["test images (top) and reconstructions", "samples from the prior"]
for ax, images, title in zip(axes, grids, titles, strict=True):
    ax.imshow(image_grid(images, (1, 28, 28), ncol=8).numpy(), cmap="gray")
    ax.set(title=title, xticks=[], yticks=[])
fig.tight_layout()
fig.savefig(OUT / "tutorial_02_images.png", dpi=100)

# %%
# Evaluation by importance sampling
# ---------------------------------
# The ELBO is only a lower bound on :math:`\log p(x)`. The S-VAE papers report the marginal
# log-likelihood, estimated by importance sampling with the guide as proposal:
#
# .. math::
#     \log p(x) \approx \log \frac{1}{S} \sum_{s=1}^{S}
#     \frac{p(x \mid z_s)\, p(z_s)}{q(z_s \mid x)}, \qquad z_s \sim q(z \mid x).
#
# In Pyro this takes a few lines. Run the guide once under an extra plate of ``S`` particles
# (``dim=-2``, left of the data plate), so that every image gets ``S`` samples at once. Then replay
# the model on those samples and add up the log densities of each (particle, image) pair:


@torch.no_grad()
def log_likelihood(x, num_samples):
    with pyro.plate("particles", num_samples, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    z = guide_trace.nodes["z"]
    log_weights = (
        model_trace.nodes["x"]["fn"].log_prob(x)  # log p(x | z_s), shape (S, N)
        + model_trace.nodes["z"]["fn"].log_prob(z["value"])  # log p(z_s)
        - z["fn"].log_prob(z["value"])  # log q(z_s | x)
    )
    return torch.logsumexp(log_weights, dim=0) - math.log(num_samples)  # (N,)


x = x_test[:100]
ll_by_hand = log_likelihood(x, NUM_IS_SAMPLES)
ll_library = importance_log_likelihood(model, guide, x, num_samples=NUM_IS_SAMPLES)
elbo_per_image = -TraceMeanField_ELBO(max_plate_nesting=1).loss(model, guide, x) / len(x)
print(f"ELBO per image                  {elbo_per_image:8.2f}")
print(f"log p(x) by hand, S = {NUM_IS_SAMPLES:4d}       {ll_by_hand.mean():8.2f}")
print(f"importance_log_likelihood       {ll_library.mean():8.2f}")
assert ll_by_hand.shape == ll_library.shape == (100,)
assert abs(ll_by_hand.mean() - ll_library.mean()) < 1.0  # two independent estimates
assert ll_by_hand.mean() > elbo_per_image  # the estimate tightens the bound

# %%
# With more samples the estimate rises towards :math:`\log p(x)`. It is a lower bound in
# expectation for every :math:`S`, tighter as :math:`S` grows (Burda et al. 2016):

for s in (1, 10, NUM_IS_SAMPLES):
    print(f"S = {s:4d}: log p(x) >~ {log_likelihood(x, s).mean():8.2f}")

# %%
# :func:`~pyro_svae.infer.evaluate` reports the averages the papers tabulate (LL, ELBO,
# reconstruction term RE and KL, in nats per image) over any iterable of batches:

batches = x_test.split(500)
results = evaluate(model, guide, batches, num_samples=NUM_IS_SAMPLES, max_plate_nesting=1)
print({key: round(value, 2) for key, value in results.items()})
assert results["ll"] > results["elbo"]
assert math.isclose(results["elbo"], results["reconstruction"] - results["kl"], rel_tol=1e-6)

# %%
# After 12 epochs (the full run, about 2 minutes on one CPU thread) this gives a test LL of about
# -105 nats per image, an ELBO of about -109 and a KL of about 17 nats, with posterior
# concentrations in the hundreds. Training longer helps a lot: ``docs/results.md`` reports -98.2
# for :math:`S^9` on static MNIST after about 100 epochs with early stopping. The command
# ``python -m pyro_svae train --latent vmf:9`` trains the packaged version of this model
# (:class:`pyro_svae.models.VAE`) with early stopping and checkpoints.
print("figures written to", OUT)

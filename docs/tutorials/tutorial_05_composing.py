r"""
Composing with other Pyro models: a mixture of von Mises–Fisher distributions
=============================================================================

The distributions of ``pyro_svae`` are ordinary Pyro distributions: they can be sampled, scored,
put inside plates, conditioned on, traced and replayed like any other. They are not tied to
VAEs. This tutorial uses them as building blocks of a *different* model, a Bayesian mixture of
von Mises–Fisher distributions that clusters directions on the sphere :math:`S^2`, and fits it
with the standard Pyro machinery:

* the cluster means are spherical latent variables, with a uniform prior
  (:class:`~pyro_svae.distributions.HypersphericalUniform`) and a von Mises–Fisher variational
  posterior (:class:`~pyro_svae.distributions.VonMisesFisher`), next to Euclidean latents
  (concentrations, mixture weights) with Pyro's own distributions;
* the discrete cluster assignment of each point is summed out exactly by
  ``config_enumerate`` + ``TraceEnum_ELBO``;
* ``TraceEnum_ELBO.compute_marginals`` and ``infer_discrete`` give the posterior over the
  assignments, ``poutine.trace`` shows what enumeration does to the shapes, and
  ``pyro.infer.Predictive`` draws from the posterior predictive distribution.

The data come from a known mixture, so at the end we can check that the means, concentrations and
assignments are recovered. Run it with ``python docs/tutorials/tutorial_05_composing.py``
(``PYRO_SVAE_SMOKE=1`` for a few-second run that only checks shapes and finiteness).
"""

# %%
# Setup
# -----

import itertools
import math
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Predictive, TraceEnum_ELBO, config_enumerate, infer_discrete
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample

from pyro_svae.distributions import HypersphericalUniform, VonMisesFisher

SMOKE = os.environ.get("PYRO_SVAE_SMOKE") == "1"
OUT = Path(os.environ.get("PYRO_SVAE_OUT") or tempfile.mkdtemp(prefix="pyro_svae_tutorial_05_"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
pyro.set_rng_seed(0)

NUM_POINTS = 200 if SMOKE else 900
NUM_STEPS = 100 if SMOKE else 1000

# %%
# Data from a known mixture
# -------------------------
# Three components on :math:`S^2 \subset \mathbb{R}^3` with different weights, mean directions
# :math:`\mu_k` and concentrations :math:`\kappa_k`. The means are 45° to 90° apart, and the
# broadest component (:math:`\kappa = 8`, an angular spread of roughly
# :math:`1/\sqrt{\kappa} \approx 20°` per direction) overlaps its neighbours, so some points are
# genuinely ambiguous. Sampling uses the exact sampler of ``VonMisesFisher``.

K = 3


def unit(*v: float) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


true_weights = torch.tensor([0.5, 0.3, 0.2])
true_locs = torch.stack([unit(1, 0, 0.3), unit(0, 1, 0.2), unit(0.6, 0.6, 0.6)])
true_kappas = torch.tensor([8.0, 20.0, 40.0])
print(
    "angles between the true means (degrees):",
    torch.rad2deg(torch.arccos((true_locs @ true_locs.T).clamp(-1, 1))).round().tolist(),
)

labels = dist.Categorical(true_weights).sample((NUM_POINTS,))
data = VonMisesFisher(true_locs[labels], true_kappas[labels]).sample()
assert data.shape == (NUM_POINTS, 3)
assert torch.allclose(data.norm(dim=-1), torch.ones(NUM_POINTS), atol=1e-5)

# %%
# The model
# ---------
# The generative story, with :math:`n = 1, \dots, N` and :math:`k = 1, \dots, K`:
#
# .. math::
#     \pi \sim \mathrm{Dirichlet}(\mathbf{1}), \qquad
#     \mu_k \sim \mathcal{U}(S^2), \qquad
#     \kappa_k \sim \mathrm{LogNormal}(\log 20, 1.5), \qquad
#     c_n \sim \mathrm{Categorical}(\pi), \qquad
#     x_n \mid c_n \sim \mathrm{vMF}(\mu_{c_n}, \kappa_{c_n}).
#
# It is a plain Pyro function. ``pyro.plate("components", K)`` holds the per-component latents and
# ``pyro.plate("data", N)`` the points. The assignment site ``c`` is marked for parallel
# enumeration by ``config_enumerate``: ``TraceEnum_ELBO`` then evaluates the likelihood for all
# :math:`K` values of every :math:`c_n` at once, in a new tensor dimension to the left of the
# plates, and sums them out exactly, so the guide does not need to handle ``c`` at all. Indexing
# ``locs[c]`` works both for an enumerated ``c`` (shape ``(K, 1)``) and for a sampled one
# (shape ``(N,)``). With ``x=None`` the model simulates data, which ``Predictive`` will use.


@config_enumerate
def model(x: torch.Tensor | None = None, num_points: int | None = None) -> torch.Tensor:
    num_points = x.shape[0] if x is not None else num_points
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(K)))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", HypersphericalUniform(3))
        kappas = pyro.sample("kappas", dist.LogNormal(math.log(20.0), 1.5))
    with pyro.plate("data", num_points):
        c = pyro.sample("c", dist.Categorical(weights))
        return pyro.sample("x", VonMisesFisher(locs[c], kappas[c]), obs=x)


# %%
# The guide
# ---------
# A mean-field guide over the continuous latents: a Dirichlet for the weights, a log-normal for
# each concentration and, for each mean direction, a von Mises–Fisher distribution with a learnable
# mean direction (a ``pyro.param`` constrained to the sphere, so Pyro optimises it through a
# normalisation) and a learnable concentration. Sampling the vMF is reparameterised in both
# parameters, so SVI gets low-variance gradients for the spherical latents just as for the
# Euclidean ones.
#
# A mixture's ELBO has local optima that are poor clusterings, so the initial mean directions matter.
# We take the first one at random among the data and every next one as the data point farthest
# from those chosen so far (a deterministic cousin of k-means++ seeding).


def farthest_points(x: torch.Tensor, k: int, first: int = 0) -> torch.Tensor:
    chosen = [first]
    for _ in range(k - 1):
        closest = (x @ x[chosen].T).max(dim=1).values  # cosine to the nearest chosen point
        chosen.append(int(closest.argmin()))
    return x[chosen]


init_locs = farthest_points(data, K, first=int(torch.randint(NUM_POINTS, ())))


def guide(x: torch.Tensor | None = None, num_points: int | None = None) -> None:
    weight_conc = pyro.param("weight_conc", torch.full((K,), 10.0), constraint=constraints.positive)
    pyro.sample("weights", dist.Dirichlet(weight_conc))
    loc_mean = pyro.param("loc_mean", init_locs.clone(), constraint=constraints.sphere)
    loc_conc = pyro.param("loc_conc", torch.full((K,), 100.0), constraint=constraints.positive)
    log_kappa_loc = pyro.param("log_kappa_loc", torch.full((K,), math.log(20.0)))
    log_kappa_scale = pyro.param(
        "log_kappa_scale", torch.full((K,), 0.2), constraint=constraints.positive
    )
    with pyro.plate("components", K):
        pyro.sample("locs", VonMisesFisher(loc_mean, loc_conc))
        pyro.sample("kappas", dist.LogNormal(log_kappa_loc, log_kappa_scale))


# %%
# What enumeration does to the shapes
# -----------------------------------
# ``poutine.trace`` records every site of a run. Tracing the guide, replaying the model on its
# samples and running it under ``poutine.enum`` (what ``TraceEnum_ELBO`` does internally) shows the
# enumerated assignment ``c`` with shape ``(K, 1)``: one value per component, broadcast against the
# ``N`` data points. The observation site therefore gets ``K x N`` log-likelihoods, one per
# (component, point) pair, which the ELBO then sums out with the weights. The enumeration dimension
# is the first one left of the plates (``first_available_dim=-2``, since ``max_plate_nesting=1``).

pyro.clear_param_store()
guide_trace = poutine.trace(guide).get_trace(data)
enumerated = poutine.enum(poutine.replay(model, trace=guide_trace), first_available_dim=-2)
model_trace = poutine.trace(enumerated).get_trace(data)
model_trace.compute_log_prob()
for name, site in model_trace.nodes.items():
    if site["type"] == "sample" and not site_is_subsample(site):  # skip the plates' index sites
        print(
            f"{name:8s} value {tuple(site['value'].shape)!s:10s} "
            f"log_prob {tuple(site['log_prob'].shape)!s:10s} {type(site['fn']).__name__}"
        )
assert model_trace.nodes["c"]["value"].shape == (K, 1)
assert model_trace.nodes["x"]["log_prob"].shape == (K, NUM_POINTS)
assert isinstance(guide_trace.nodes["locs"]["fn"], VonMisesFisher)

# %%
# Fitting with SVI
# ----------------
# ``TraceEnum_ELBO`` with ``max_plate_nesting=1`` computes the ELBO with the assignments summed
# out; everything else is the usual SVI loop. The loss is printed as the negative ELBO per point.

elbo = TraceEnum_ELBO(max_plate_nesting=1)
svi = SVI(model, guide, Adam({"lr": 0.05}), elbo)
losses = []
for step in range(NUM_STEPS):
    losses.append(svi.step(data) / NUM_POINTS)
    if step % max(1, NUM_STEPS // 5) == 0 or step == NUM_STEPS - 1:
        print(f"step {step:5d}  -ELBO per point = {losses[-1]:.4f}")
assert all(math.isfinite(v) for v in losses)

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(losses)
ax.set_xlabel("SVI step")
ax.set_ylabel("-ELBO per point")
ax.set_ylim(top=losses[min(10, len(losses) - 1)])
fig.tight_layout()
fig.savefig(OUT / "tutorial_05_loss.png", dpi=100, bbox_inches="tight")

# %%
# Did it recover the mixture?
# ---------------------------
# A mixture is only identified up to a relabelling of its components, so each estimated component
# is first matched to a true one (the permutation with the smallest total angle between the means;
# with :math:`K = 3` trying all :math:`3! = 6` is cheap). Then we compare the posterior mean
# directions with the true :math:`\mu_k` (angle in degrees), the posterior median concentrations
# with the true :math:`\kappa_k`, and the posterior mean weights with the true :math:`\pi_k`.

store = pyro.get_param_store()
est_locs = store["loc_mean"].detach()
est_kappas = store["log_kappa_loc"].detach().exp()
est_weights = store["weight_conc"].detach() / store["weight_conc"].detach().sum()


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.arccos((a * b).sum(-1).clamp(-1.0, 1.0)))


perm = min(
    itertools.permutations(range(K)),
    key=lambda p: angle_deg(est_locs[list(p)], true_locs).sum().item(),
)
perm = list(perm)  # estimated component perm[k] is true component k
errors = angle_deg(est_locs[perm], true_locs)
print("component  angle error  kappa (true / est)  weight (true / est)  posterior conc. of mu")
for k in range(K):
    print(
        f"{k:9d}  {errors[k]:9.2f}°   {true_kappas[k]:6.1f} / {est_kappas[perm[k]]:6.1f}"
        f"      {true_weights[k]:.2f} / {est_weights[perm[k]]:.2f}"
        f"         {store['loc_conc'][perm[k]].item():8.0f}"
    )
assert torch.isfinite(est_locs).all()
assert torch.isfinite(est_kappas).all()
if not SMOKE:
    assert errors.max() < 5.0, "the mean directions should be recovered within a few degrees"
    relative = (est_kappas[perm] / true_kappas - 1).abs()
    assert relative.max() < 0.35, "the concentrations should be recovered"
    assert (est_weights[perm] - true_weights).abs().max() < 0.06

# %%
# The learned concentration of each mean's vMF posterior (last column) is large: the posterior of
# :math:`\mu_k` has an angular spread of about :math:`1/\sqrt{\text{conc.}}` radians, which shrinks
# like :math:`1/\sqrt{N_k \kappa_k}` with the number :math:`N_k` of points in the cluster. This is
# the Bayesian side of the model: the uncertainty about each mean, on the sphere itself.
#
# Assignments
# -----------
# Two ways to get at the discrete assignments:
#
# * ``TraceEnum_ELBO.compute_marginals`` returns, for every enumerated site, its posterior
#   marginal given a draw of the guide: here a ``Categorical`` per point with the
#   *responsibilities* :math:`p(c_n = k \mid x_n, \pi, \mu, \kappa)`;
# * ``infer_discrete`` with ``temperature=0`` runs the model with every enumerated site set to its
#   jointly most probable value (MAP), here given the *posterior means* of the continuous latents,
#   which we fix with ``poutine.condition``.
#
# To judge the accuracy we also compute the Bayes classifier with the *true* parameters: since the
# components overlap, even it makes some mistakes, and a fitted model cannot be expected to do
# better.

marginals = elbo.compute_marginals(model, guide, data)
responsibilities = marginals["c"].probs  # a Categorical per data point
assert responsibilities.shape == (NUM_POINTS, K)
assert torch.allclose(responsibilities.sum(-1), torch.ones(NUM_POINTS), atol=1e-4)

point_estimate = {"weights": est_weights, "locs": est_locs, "kappas": est_kappas}
map_model = infer_discrete(
    poutine.condition(model, data=point_estimate), temperature=0, first_available_dim=-2
)
map_trace = poutine.trace(map_model).get_trace(data)
assignments = map_trace.nodes["c"]["value"]
assert assignments.shape == (NUM_POINTS,)

to_true = torch.empty(K, dtype=torch.long)
to_true[torch.tensor(perm)] = torch.arange(K)  # estimated label -> true label
accuracy = (to_true[assignments] == labels).float().mean().item()
soft_accuracy = (to_true[responsibilities.argmax(-1)] == labels).float().mean().item()

log_joint = torch.log(true_weights) + VonMisesFisher(true_locs, true_kappas).log_prob(data[:, None])
bayes_accuracy = (log_joint.argmax(-1) == labels).float().mean().item()
print(f"MAP assignments (infer_discrete):      accuracy {accuracy:.3f}")
print(f"argmax of the responsibilities:        accuracy {soft_accuracy:.3f}")
print(f"Bayes classifier with true parameters: accuracy {bayes_accuracy:.3f}")
if not SMOKE:
    assert accuracy > bayes_accuracy - 0.03
    assert soft_accuracy > bayes_accuracy - 0.03

# %%
# The figure shows the data on the sphere (seen from above the average of the true means, in an
# equal-area azimuthal projection), coloured by the true component on the left and by the MAP assignment on
# the right; black crosses are the estimated means. Points where the two panels disagree sit in the
# overlap between components, where the responsibilities are far from 0 and 1.


def project(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Lambert azimuthal equal-area projection of unit vectors around ``centre``."""
    e1 = torch.linalg.cross(centre, torch.tensor([0.0, 0.0, 1.0]))
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(centre, e1)
    cos = (x @ centre).clamp(-1.0, 1.0)
    scale = torch.sqrt(2.0 / (1.0 + cos).clamp_min(1e-6))
    return torch.stack([x @ e1, x @ e2], dim=-1) * scale[:, None]


centre = true_locs.mean(0) / true_locs.mean(0).norm()
xy = project(data, centre)
means_xy = project(est_locs, centre)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
for ax, colours, title in [
    (axes[0], labels, "true components"),
    (axes[1], to_true[assignments], f"MAP assignments (accuracy {accuracy:.2f})"),
]:
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, cmap="viridis", s=8, vmin=0, vmax=K - 1)
    ax.scatter(means_xy[:, 0], means_xy[:, 1], marker="x", c="k", s=80, label="estimated means")
    ax.set_aspect("equal")
    ax.set_title(title)
axes[0].legend(loc="lower left")
fig.tight_layout()
fig.savefig(OUT / "tutorial_05_clusters.png", dpi=100, bbox_inches="tight")

# %%
# Posterior predictive check
# --------------------------
# ``Predictive`` draws the continuous latents from the guide, runs the model with ``x=None`` (so it
# samples new assignments and new points) and returns the sampled sites. From each simulated data
# set we compute a statistic and compare its distribution with the value on the real data. We use
# the length of the mean resultant vector :math:`\|\tfrac1N \sum_n x_n\|`, which depends on the
# weights, the means and the concentrations together: a model that got any of them wrong would put
# the observed value in the tail of the simulated ones.

predictive = Predictive(model, guide=guide, num_samples=50 if SMOKE else 300, return_sites=["x"])
simulated = predictive(None, num_points=NUM_POINTS)["x"]
assert simulated.shape == (predictive.num_samples, NUM_POINTS, 3)
assert torch.isfinite(simulated).all()
statistic = simulated.mean(1).norm(dim=-1)
observed = data.mean(0).norm().item()
quantile = (statistic < observed).float().mean().item()
print(
    f"mean resultant length: observed {observed:.4f}, simulated {statistic.mean():.4f}"
    f" ± {statistic.std():.4f}; observed value at the {100 * quantile:.0f}% quantile"
)
if not SMOKE:
    assert 0.01 < quantile < 0.99, "the observed statistic should be typical under the model"

fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(statistic.numpy(), bins=30, alpha=0.7, label="posterior predictive")
ax.axvline(observed, color="k", lw=2, label="observed")
ax.set_xlabel(r"$\|\frac{1}{N}\sum_n x_n\|$")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "tutorial_05_predictive.png", dpi=100, bbox_inches="tight")

# %%
# What we saw
# -----------
# * A hyperspherical distribution is just a Pyro distribution: a vMF can be a likelihood (the
#   observations), a prior (the uniform on :math:`S^2`) or a variational posterior (over the means),
#   in any model, next to Dirichlets, log-normals and categoricals.
# * Discrete latents compose with spherical ones through enumeration: ``config_enumerate`` and
#   ``TraceEnum_ELBO`` marginalise the assignments exactly, and ``compute_marginals`` /
#   ``infer_discrete`` recover them afterwards.
# * The fitted mixture finds the true mean directions within a degree or two, the concentrations and
#   the weights within their posterior uncertainty, and assigns points about as well as the Bayes
#   classifier that knows the true parameters.
#
# The same pattern puts a spherical latent inside a bigger model: for instance a VAE whose prior
# over :math:`z \in S^{d}` is this mixture instead of the uniform distribution (replace
# ``HypersphericalUniform`` in the model by the enumerated mixture), or a semi-supervised model
# whose class label is enumerated when it is not observed.

"""Training runs: a flow posterior beats the flow-free one, for a VAE trained from scratch (encoder,
decoder and flow jointly) and for a sphere flow fitted to a curved target density on S^2.

Both tests compare runs with the same seed and budget (same network initialisation and the same data),
train full-batch with a cosine-decayed learning rate so that the final iterate is not dominated by
optimiser noise, and score the result with many Monte Carlo samples.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_svae.distributions import PowerSpherical, VonMisesFisher
from pyro_svae.flows import SphereFlow, parse_flow_spec
from pyro_svae.infer import AnnealedELBO
from pyro_svae.models.flow_vae import FlowVAE

# ------------------------------------------------------------------------------------------------
# A Gaussian VAE with and without a flow, trained jointly from scratch
# ------------------------------------------------------------------------------------------------


def _ring_data(n: int, seed: int, pixels: int = 32) -> torch.Tensor:
    """Binary images of a bump at a uniform random angle on a ring of ``pixels`` pixels.

    The data lie near a circle, which a decoder from a 2-D Gaussian latent can only reach by folding
    or wrapping the plane, so the exact posteriors of a trained decoder are curved and skewed: a
    diagonal Gaussian fits them worse than a flow.
    """
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, 1, generator=g) * 2 * math.pi
    position = torch.arange(pixels) * 2 * math.pi / pixels
    return torch.bernoulli(torch.sigmoid(6.0 * torch.cos(position - angle) - 2.0), generator=g)


def _cosine(optim: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optim, lambda i: 0.5 * (1.0 + math.cos(math.pi * i / steps))
    )


def _train_vae(flow: str | None, flow_type: str, x: torch.Tensor, held_out: torch.Tensor, seed=0):
    """Train ``normal:2`` VAE (+ flow) on ``x`` for 300 full-batch steps; (train, held-out) ELBO per
    data point, estimated with 100 samples each."""
    steps = 300
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)  # the encoder and decoder are built first: same initial networks
    vae = FlowVAE("normal:2", x.shape[1], flow=flow, flow_type=flow_type, hidden=(64,))
    optim = torch.optim.Adam(vae.parameters(), lr=1e-2)
    schedule = _cosine(optim, steps)
    elbo = AnnealedELBO(max_plate_nesting=2)
    for _ in range(steps):
        loss = elbo.differentiable_loss(vae.model, vae.guide, x) / x.shape[0]
        optim.zero_grad()
        loss.backward()
        optim.step()
        schedule.step()
    evaluation = AnnealedELBO(max_plate_nesting=2, num_particles=100, vectorize_particles=True)
    with torch.no_grad():
        return tuple(
            -evaluation.loss(vae.model, vae.guide, data) / len(data) for data in (x, held_out)
        )


@pytest.mark.slow
def test_training_flow_vae_improves_elbo_over_gaussian():
    """Encoder, decoder and flow trained jointly from scratch, with the same seed and budget as the
    flow-free VAE. Observed ELBO (nats per data point; 256 training and 256 held-out points of 32
    pixels; mean and range over seeds 0-4; each flow's gain is paired by seed)::

        posterior            train ELBO               held-out ELBO            gain: train  held-out
        diagonal Gaussian    -9.048 (-9.061..-9.024)  -9.722 (-9.744..-9.703)
        radial:4 amortized   -8.748 (-8.779..-8.713)  -9.453 (-9.487..-9.437)  0.25..0.34   0.24..0.29
        nice:2 amortized     -8.859 (-8.871..-8.836)  -9.586 (-9.600..-9.570)  0.19..0.19   0.12..0.16

    Other flows, train ELBO only: planar:8 amortized -8.74, radial:4 static -8.83, planar:4 static
    -8.88; householder:2 static -9.05 (no gain: in 2-D it only reflects the diagonal Gaussian).

    Failure rate: the seeds are fixed, so the outcome only changes with the platform's random streams.
    The smallest paired gains over five seeds (0.19 train, 0.12 held-out, both NICE) exceed the margins
    asserted below (0.10 and 0.06) by four or more standard deviations of the gains across seeds
    (about 0.01-0.02 nats), so a change of random stream fails it with a negligible probability.
    """
    x, held_out = _ring_data(256, seed=0), _ring_data(256, seed=1)
    base_train, base_held = _train_vae(None, "static", x, held_out)
    for flow in ("radial:4", "nice:2"):
        train, held = _train_vae(flow, "amortized", x, held_out)
        assert train > base_train + 0.10, (flow, train, base_train)
        assert held > base_held + 0.06, (flow, held, base_held)


# ------------------------------------------------------------------------------------------------
# A vMF / Power Spherical factor with and without a sphere flow, fitted to a target on S^2
# ------------------------------------------------------------------------------------------------


def _banana_log_density(z: torch.Tensor) -> torch.Tensor:
    """Unnormalised: a thin band along the small circle at height 0.3, heavier towards +x (a banana)."""
    return -80.0 * (z[..., 2] - 0.3) ** 2 + 2.0 * z[..., 0]


def _banana_log_normalizer(n: int = 400) -> float:
    """Midpoint rule in (cos(polar angle), azimuth), the surface measure being d(cos) d(azimuth)."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    phi = (torch.arange(2 * n, dtype=torch.float64) + 0.5) / (2 * n) * 2 * math.pi
    t, phi = torch.meshgrid(t, phi, indexing="ij")
    r = (1 - t**2).sqrt()
    grid = torch.stack([r * phi.cos(), r * phi.sin(), t], -1)
    return math.log(_banana_log_density(grid).exp().sum().item() * (2 / n) * (math.pi / n))


def _fit_sphere(base_cls, flow: str | None, seed: int = 0, steps: int = 300) -> float:
    """Fit ``base_cls(loc, kappa)`` (+ a static sphere flow) to the banana by reverse KL, 128 samples
    a step; return KL(q || target) estimated with 20000 samples."""
    torch.manual_seed(seed)  # loc and kappa first: the same initial base with and without the flow
    loc = torch.nn.Parameter(torch.tensor([1.0, 0.0, 0.3]) + 0.1 * torch.randn(3))
    log_kappa = torch.nn.Parameter(torch.tensor(math.log(5.0)))
    sphere_flow = SphereFlow(3, 1, parse_flow_spec(flow).terms) if flow else None
    params = [loc, log_kappa, *(sphere_flow.parameters() if sphere_flow else ())]
    optim = torch.optim.Adam(params, lr=2e-2)
    schedule = _cosine(optim, steps)

    def posterior():
        base = base_cls(torch.nn.functional.normalize(loc, dim=-1), log_kappa.exp())
        if sphere_flow is None:
            return base
        return dist.TransformedDistribution(base, sphere_flow.transforms())

    for _ in range(steps):
        q = posterior()
        z = q.rsample((128,))
        loss = (q.log_prob(z) - _banana_log_density(z)).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        schedule.step()
    with torch.no_grad():
        q = posterior()
        z = q.sample((20000,))
        return (q.log_prob(z) - _banana_log_density(z)).mean().item() + _banana_log_normalizer()


@pytest.mark.slow
@pytest.mark.parametrize("base_cls", [VonMisesFisher, PowerSpherical])
def test_sphere_flow_fits_banana_better_than_base(base_cls):
    """Reverse-KL fit of a banana-shaped density on S^2. Observed KL(q || target), nats, seeds 0-4::

        q                     vMF base       Power Spherical base
        base only             1.87 .. 1.94   2.26 .. 2.39
        base + mobiusmix:2    1.52 .. 1.54   1.49 .. 1.53
        base + mobius:2       1.53 .. 1.55   1.53 .. 1.54

    Failure rate: fixed seeds; the smallest paired gain of mobiusmix:2 over the five seeds (0.33 nats,
    vMF) is about four standard deviations of the gains across seeds above the asserted 0.2 nats.
    """
    plain = _fit_sphere(base_cls, None)
    flow = _fit_sphere(base_cls, "mobiusmix:2")
    assert flow < plain - 0.2, (flow, plain)
    assert flow > 0  # a KL: the estimate is positive (20000 samples, no room for a sign error)

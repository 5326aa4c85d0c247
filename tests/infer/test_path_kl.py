"""The path-derivative ("sticking the landing") gradient of the Monte Carlo KL: ``kl_gradient="path"``."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from torch.distributions import kl_divergence

from pyro_svae.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from pyro_svae.infer import AnnealedELBO
from pyro_svae.infer.path_gradient import (
    _generic,
    _inverse_jacobian_product,
    base_path_log_prob,
    path_log_prob,
)
from pyro_svae.models import FlowVAE
from pyro_svae.train import TrainConfig


def _flow_log_q_from_base(q, z0):
    """log q_K(T(z0)) computed forwards from z0, without any inverse: log q0(z0) - sum log|det J|."""
    log_q, x = q.base_dist.log_prob(z0), z0
    for t in q.transforms:
        y = t(x)
        log_q = log_q - t.log_abs_det_jacobian(x, y)
        x = y
    return log_q, x


def _posterior(flow: str, seed: int = 0, flow_type: str = "amortized", planar_min_det: float = 0.0):
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    vae = FlowVAE(
        "normal:5", 12, flow=flow, flow_type=flow_type, hidden=(16,), planar_min_det=planar_min_det
    ).double()
    for p in vae.parameters():  # move every step well away from the identity
        p.data.add_(0.3 * torch.randn_like(p))
    x = (torch.rand(4, 12) < 0.5).double()
    return vae, x


FLOWS = [
    "planar:4",
    "radial:3",
    "nice:4",
    "householder:2+planar:2",
    "householder:1+radial:1+nice:2",
]
#: (flow, planar_min_det): every flow with Pyro's planar step, and planar flows with a bounded one
FLOW_CASES = [(flow, 0.0) for flow in FLOWS] + [("planar:4", 0.3), ("householder:2+planar:2", 0.3)]
FLOW_IDS = [f"{flow}-min_det={min_det:g}" for flow, min_det in FLOW_CASES]


@pytest.mark.parametrize("flow_type", ["amortized", "static"])
@pytest.mark.parametrize(("flow", "min_det"), FLOW_CASES, ids=FLOW_IDS)
def test_path_gradient_is_the_score_of_the_flow_density_times_the_sample_path(
    flow, min_det, flow_type
):
    """The surrogate's gradient is g . dz_K/dphi with g = d log q_K(z)/dz at z_K. g is checked by
    finite differences of log q_K along the flow (z0 -> z0 + eps v), which needs no inverse."""
    vae, x = _posterior(flow, flow_type=flow_type, planar_min_det=min_det)
    q = vae.posteriors(x)[0]
    z = q.rsample()
    params = [p for p in vae.parameters() if p.requires_grad]
    surrogate = path_log_prob(q, z).sum()
    assert torch.allclose(surrogate, q.log_prob(z).sum())  # the value is unchanged
    got = torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True)

    # reference g by central differences along a basis of base directions, then g^T dz/dphi
    z0 = q.transforms[0]._cached_x_y[0].detach()
    q_ref = vae.posteriors(x)[0]  # same parameters, fresh transforms (the caches stay apart)
    # eps near the cube root of float64's epsilon balances the central difference's truncation and
    # rounding errors (1e-6 left about 4e-8 of the largest gradient, on some CPUs above atol)
    d, eps = z0.shape[-1], 1e-5
    rows_dlogq, rows_dz = [], []
    with torch.no_grad():
        for j in range(d):
            step = torch.zeros_like(z0)
            step[..., j] = eps
            lp, zp = _flow_log_q_from_base(q_ref, z0 + step)
            lm, zm = _flow_log_q_from_base(q_ref, z0 - step)
            rows_dlogq.append((lp - lm) / (2 * eps))  # d log q_K / d z0_j
            rows_dz.append((zp - zm) / (2 * eps))  # d z_K / d z0_j
    a = torch.stack(rows_dlogq, -1)  # [..., j]
    jac = torch.stack(rows_dz, -1)  # [..., i, j] = d z_K_i / d z0_j
    g = torch.linalg.solve(jac.mT, a.unsqueeze(-1)).squeeze(-1)
    expected = torch.autograd.grad((g * z).sum(), params, allow_unused=True)
    for e, o in zip(expected, got, strict=True):
        if e is None:
            assert o is None or torch.count_nonzero(o) == 0
        else:
            assert torch.allclose(o, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("flow_type", ["amortized", "static"])
@pytest.mark.parametrize(("flow", "min_det"), FLOW_CASES, ids=FLOW_IDS)
def test_structured_inverse_jacobian_products_match_the_full_jacobian_solve(
    flow, min_det, flow_type
):
    """Each step's v^T J^-1 (Sherman-Morrison, reflection, coupling VJP, scaling) equals the generic
    route: the step's full Jacobian from autograd and a linear solve."""
    vae, x = _posterior(flow, flow_type=flow_type, planar_min_det=min_det)
    q = vae.posteriors(x)[0]
    q.rsample()
    for t in q.transforms:
        point = t._cached_x_y[0].detach()
        v = torch.randn_like(point)
        with torch.no_grad():
            fast = _inverse_jacobian_product(t, point, v)
            reference = _generic(t, point, v)
        assert torch.allclose(fast, reference, rtol=1e-9, atol=1e-10), type(t).__name__


def test_path_gradient_uses_the_inverse_free_route_consistently_with_an_invertible_flow():
    """NICE can be inverted exactly: g from the forward pass equals autograd through the inverse."""
    vae, x = _posterior("nice:4")
    q = vae.posteriors(x)[0]
    z = q.rsample()
    surrogate = path_log_prob(q, z).sum()
    z_leaf = z.detach().requires_grad_()
    q_inv = vae.posteriors(x)[0]
    (g,) = torch.autograd.grad(q_inv.log_prob(z_leaf).sum(), z_leaf)
    (dz,) = torch.autograd.grad(surrogate, z, retain_graph=True)
    assert torch.allclose(dz, g, rtol=1e-8, atol=1e-10)


def test_path_kl_gradient_vanishes_where_the_guide_is_the_prior():
    """q = p: the closed-form KL has zero gradient; the total Monte Carlo gradient does not; the path
    gradient is zero up to rounding, as for an unused latent dimension."""
    loc = torch.zeros(3, 4, requires_grad=True)
    log_scale = torch.zeros(3, 4, requires_grad=True)
    prior = dist.Normal(torch.zeros(3, 4), torch.ones(3, 4)).to_event(1)

    def kl(path: bool):
        q = dist.Normal(loc, log_scale.exp()).to_event(1)
        z = q.rsample()
        log_q = path_log_prob(q, z).sum() if path else q.log_prob(z).sum()
        return log_q - prior.log_prob(z).sum()

    torch.manual_seed(0)
    total = torch.autograd.grad(kl(False), [loc, log_scale])
    torch.manual_seed(0)
    path = torch.autograd.grad(kl(True), [loc, log_scale])
    assert all(g.abs().max() > 0.1 for g in total)
    assert all(g.abs().max() < 1e-5 for g in path)


LOG_PROBS = {
    "total": lambda q, z: q.log_prob(z),
    "path": path_log_prob,
    "base_path": base_path_log_prob,
}


def _kl_gradient_batches(
    gradient: str, batches: int, draws: int, seed: int, latent: str = "normal:3", flow="planar:2"
) -> torch.Tensor:
    """Gradient estimates of E_q[log q - log p] for a static flow, one row per batch of draws,
    flattened over the flow's parameters and the encoder's last layer."""
    torch.manual_seed(1)
    pyro.set_rng_seed(1)
    vae = FlowVAE(latent, 6, flow=flow, flow_type="static", hidden=(8,)).double()
    for p in vae.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    x = (torch.rand(1, 6) < 0.5).double().expand(draws, 6)
    params = [p for name, p in vae.named_parameters() if "flows" in name or "heads" in name]
    assert params
    torch.manual_seed(seed)
    rows = []
    for _ in range(batches):
        q = vae.posteriors(x)[0]
        z = q.rsample()
        if latent.startswith("normal"):
            prior = dist.Normal(torch.zeros_like(z), 1.0).to_event(1)
        else:
            prior = HypersphericalUniform(z.shape[-1], dtype=z.dtype).expand(z.shape[:-1])
        log_q = LOG_PROBS[gradient](q, z).sum()
        grads = torch.autograd.grad(log_q - prior.log_prob(z).sum(), params)
        rows.append(torch.cat([g.flatten() for g in grads]) / draws)
    return torch.stack(rows)


def _assert_same_mean(a: torch.Tensor, b: torch.Tensor, min_coordinates: int) -> None:
    """Every coordinate that gets a gradient has the same mean in ``a`` and ``b`` (rows: independent
    batch estimates) within 5 standard errors; coordinates without one are zero in both."""
    diff = a.mean(0) - b.mean(0)
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    moving = se > 0
    assert moving.sum() >= min_coordinates
    t_stat = diff[moving] / se[moving]
    assert t_stat.abs().max() < 5, t_stat
    assert torch.count_nonzero(diff[~moving]) == 0


def test_path_gradient_is_unbiased():
    """The path and the total gradient have the same mean: over 40 batches of 500 draws each, every
    coordinate's mean difference is within 5 standard errors (fixed seeds; with 44 coordinates that
    get a gradient and a t distribution with 78 degrees of freedom, a correct estimator fails this
    about once in 10^3; dropping the J^-T solve makes the largest |t| about 14). Coordinates without
    a gradient must be zero in both."""
    path = _kl_gradient_batches("path", 40, 500, seed=2)
    total = _kl_gradient_batches("total", 40, 500, seed=3)
    _assert_same_mean(path, total, min_coordinates=40)


@pytest.mark.parametrize(
    ("latent", "flow"), [("normal:3", "planar:2"), ("vmf:2", "mobius:2")], ids=["planar", "mobius"]
)
def test_base_path_gradient_is_unbiased(latent, flow):
    """The base-only path gradient has the total gradient's mean, on R^3 (planar) and on S^2 (Möbius):
    over 40 batches of 500 draws, every coordinate's mean difference is within 5 standard errors
    (fixed seeds; a correct estimator fails this about once in 10^3). Dropping the gradient of the
    flow's log-determinants as well, a biased estimator, makes the planar case fail with a largest
    |t| of about 150."""
    base_path = _kl_gradient_batches("base_path", 40, 500, seed=2, latent=latent, flow=flow)
    total = _kl_gradient_batches("total", 40, 500, seed=3, latent=latent, flow=flow)
    _assert_same_mean(base_path, total, min_coordinates=20)


@pytest.mark.parametrize("flow", ["planar:3", "radial:2", "nice:2", "householder:1+planar:2"])
def test_base_path_gradient_is_the_path_gradient_on_the_base_and_the_total_on_the_flow(flow):
    """With a static flow the parameters split cleanly: the base's (encoder and heads) get exactly
    the full path gradient (through the inverse Jacobians, computed another way), the flow's get
    exactly the total gradient; the value is unchanged."""
    vae, x = _posterior(flow, flow_type="static")
    q = vae.posteriors(x)[0]
    z = q.rsample()
    base = [p for name, p in vae.named_parameters() if name.startswith(("encoder", "heads"))]
    steps = [p for name, p in vae.named_parameters() if name.startswith("flows")]
    surrogate = base_path_log_prob(q, z).sum()
    assert torch.allclose(surrogate, q.log_prob(z).sum())

    def grad(output, inputs):  # NICE's shift networks do not enter the forward log q: zero
        grads = torch.autograd.grad(output, inputs, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, inputs, strict=True)]

    got = grad(surrogate, base + steps)
    path = grad(path_log_prob(q, z).sum(), base)
    total = grad(q.log_prob(z).sum(), steps)
    for g, e in zip(got, path + total, strict=True):
        assert torch.allclose(g, e, rtol=1e-8, atol=1e-10)
    score = torch.autograd.grad(q.log_prob(z).sum(), base)
    assert any((s - p).abs().max() > 1e-3 for s, p in zip(score, path, strict=True))


def test_base_path_gradient_without_a_flow_is_the_path_gradient():
    vae, x = _posterior("planar:1")
    base = vae.posteriors(x)[0].base_dist
    z = base.rsample()
    heads = list(vae.heads.parameters())
    got = torch.autograd.grad(base_path_log_prob(base, z).sum(), heads, retain_graph=True)
    expected = torch.autograd.grad(path_log_prob(base, z).sum(), heads)
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)


@pytest.mark.filterwarnings("ignore:kl_gradient='path' on site")
@pytest.mark.parametrize("gradient", ["path", "base_path"])
def test_elbo_values_are_the_same_with_either_gradient_and_svi_trains(gradient):
    vae = FlowVAE("normal:4", 12, flow="planar:2", flow_type="amortized", hidden=(16,))
    x = (torch.rand(8, 12) < 0.5).float()
    losses = []
    for kl_gradient in ("total", gradient):
        pyro.set_rng_seed(0)
        losses.append(AnnealedELBO(kl_gradient=kl_gradient).loss(vae.model, vae.guide, x))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    pyro.clear_param_store()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), AnnealedELBO(kl_gradient=gradient))
    before = [p.detach().clone() for p in vae.parameters()]
    for _ in range(2):
        assert torch.isfinite(torch.tensor(svi.step(x)))
    assert any(not torch.equal(b, p) for b, p in zip(before, vae.parameters(), strict=True))


@pytest.mark.parametrize("family", ["vmf", "ps"])
def test_sphere_path_gradient_has_the_closed_form_kl_gradient_as_mean(family):
    """On S^4 the path gradient of log q(z) - log p(z) (uniform p) has the closed-form KL's gradient
    as its mean: within 5 standard errors over 40 batches of 2000 draws (fixed seed; 6 coordinates,
    a correct estimator fails about once in 10^4)."""
    torch.manual_seed(0)
    raw = torch.randn(5, dtype=torch.float64, requires_grad=True)
    log_kappa = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    family_class = VonMisesFisher if family == "vmf" else PowerSpherical

    def posterior(n=None):
        loc, kappa = torch.nn.functional.normalize(raw, dim=-1), log_kappa.exp()
        if n is not None:
            loc, kappa = loc.expand(n, 5), kappa.expand(n)
        return family_class(loc, kappa)

    prior = HypersphericalUniform(5, dtype=torch.float64)
    kl_closed = kl_divergence(posterior(), prior)  # independent of the mean direction
    expected = torch.autograd.grad(kl_closed, [raw, log_kappa], allow_unused=True)
    expected = [
        torch.zeros_like(p) if g is None else g
        for p, g in zip((raw, log_kappa), expected, strict=True)
    ]
    rows = []
    for _ in range(40):
        q = posterior(2000)
        z = q.rsample()
        kl = path_log_prob(q, z) - prior.log_prob(z)
        grads = torch.autograd.grad(kl.mean(), [raw, log_kappa])
        rows.append(torch.cat([g.flatten() for g in grads]))
    rows = torch.stack(rows)
    t_stat = (rows.mean(0) - torch.cat([g.flatten() for g in expected])) / (rows.std(0) / 40**0.5)
    assert t_stat.abs().max() < 5, t_stat


def test_sphere_flows_keep_the_total_gradient():
    """A Monte Carlo KL through a flow on a sphere (no real-vector support) keeps the total gradient."""
    vae = FlowVAE("vmf:3", 12, flow="mobius:2", flow_type="amortized", hidden=(16,))
    x = (torch.rand(8, 12) < 0.5).float()
    grads = []
    for gradient in ("total", "path"):
        pyro.set_rng_seed(0)
        vae.zero_grad()
        AnnealedELBO(kl="mc", kl_gradient=gradient).loss_and_grads(vae.model, vae.guide, x)
        grads.append([p.grad.clone() for p in vae.parameters() if p.grad is not None])
    assert grads[0]
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_bad_kl_gradient_is_rejected():
    with pytest.raises(ValueError, match="kl_gradient must be one of"):
        AnnealedELBO(kl_gradient="score")


@pytest.mark.parametrize("gradient", ["path", "base_path"])
def test_path_gradient_with_a_closed_form_kl_is_refused_or_flagged(gradient):
    """``kl="analytic"`` leaves the path gradient nothing to act on: an error. With ``kl="auto"`` a
    site whose KL has a closed form keeps it, and a warning (once per site) points to ``kl="mc"``;
    with ``kl="mc"``, or on a flow (no closed form), there is nothing to warn about."""
    with pytest.raises(ValueError, match="kl='analytic' uses none: use kl='mc'"):
        AnnealedELBO(kl="analytic", kl_gradient=gradient)
    with pytest.raises(ValueError, match="kl='analytic' uses none"):
        TrainConfig(kl="analytic", kl_gradient=gradient)
    x = (torch.rand(8, 12) < 0.5).float()
    plain = FlowVAE("normal:4", 12, hidden=(16,))
    elbo = AnnealedELBO(kl_gradient=gradient)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            elbo.loss(plain.model, plain.guide, x)
    messages = [str(w.message) for w in record if f"kl_gradient={gradient!r}" in str(w.message)]
    assert len(messages) == 1, messages
    assert "no effect on site 'z'" in messages[0]
    assert "Pass kl='mc'" in messages[0]
    radial = FlowVAE("normal:4", 12, flow="radial:2", flow_type="amortized", hidden=(16,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AnnealedELBO(kl="mc", kl_gradient=gradient).loss(plain.model, plain.guide, x)
        AnnealedELBO(kl_gradient=gradient).loss(radial.model, radial.guide, x)


@pytest.mark.parametrize("flow_type", ["static", "amortized"])
def test_path_gradient_on_a_planar_flow_warns_once(flow_type):
    """On trained planar flows the path gradient had a heavy tail: the ELBO says so, once per site;
    the total and the base-only path gradient do not warn."""
    x = (torch.rand(8, 12) < 0.5).float()
    vae = FlowVAE("normal:4", 12, flow="radial:1+planar:2", flow_type=flow_type, hidden=(16,))
    elbo = AnnealedELBO(kl_gradient="path")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            elbo.loss(vae.model, vae.guide, x)
        AnnealedELBO().loss(vae.model, vae.guide, x)
        AnnealedELBO(kl_gradient="base_path").loss(vae.model, vae.guide, x)
    messages = [str(w.message) for w in record if "planar flow" in str(w.message)]
    assert len(messages) == 1, messages
    assert "kl_gradient='total' and 'base_path' have no such tail" in messages[0]

r"""The 1-D marginal of the von Mises–Fisher distribution: exact samplers and implicit gradients.

For :math:`z \sim \mathrm{vMF}(\mu, \kappa)` on :math:`S^{m-1}`, the cosine :math:`w = \mu^\top z` has
density on :math:`[-1, 1]`

.. math:: f(w; \kappa) \propto e^{\kappa w} (1 - w^2)^{(m-3)/2},
          \qquad \mathbb{E}[w] = A_m(\kappa) = I_{m/2}(\kappa) / I_{m/2-1}(\kappa).

Samplers (all exact, all batched without a Python loop per sample):

* ``m = 2``: the von Mises angle (Best & Fisher 1979, as in :class:`torch.distributions.VonMises`);
* ``m = 3``: the inverse CDF :math:`1 - w = -\log(1 + (1-u)(e^{-2\kappa} - 1)) / \kappa`, written with
  ``log1p``/``expm1`` so it is exact for :math:`\kappa \to 0` and :math:`|w| \le 1` always;
* ``m >= 4``: Wood's (1994) rejection sampler with the rationalised envelope parameter
  :math:`b = (m-1) / (2\kappa + \sqrt{4\kappa^2 + (m-1)^2})`, and an optional Metropolis–Hastings chain that
  uses Wood's envelope as an independence proposal (approximate; see :func:`sample_marginal_mh`).

Every sampler returns both :math:`w` and :math:`1 - w`, the latter computed without cancellation, so that
:math:`\sqrt{1 - w^2}` stays accurate when :math:`\kappa` is large.

Gradients in :math:`\kappa` use implicit reparameterisation (Figurnov et al. 2018), in closed form for
:math:`m = 3` and otherwise as follows:
:math:`\partial w / \partial \kappa = -\partial_\kappa F(w; \kappa) / f(w; \kappa)` with
:math:`\partial_\kappa F(w) = \int_{-1}^{w} (t - A_m(\kappa)) f(t)\, dt`. The integral is taken over the
side of :math:`w` on which :math:`f` decays away from :math:`w` (so no cancellation), truncated where the
integrand has fallen by :math:`e^{-40}` (:math:`e^{-20}`, with float32 node arithmetic for :math:`m \le 32`,
when the gradient is returned in float32: see :func:`quadrature_settings`; found by
bisection, bounded with the log-concavity of the density), and computed by Gauss–Legendre quadrature after a
substitution that smooths both singularities of :math:`(1 - t^2)^{(m-3)/2}`: log-graded next to :math:`w`
(the opposite endpoint can be as close as :math:`1 - w`) and quadratic at the endpoint the side runs into.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from pyro_svae.ops import ive_ratio

__all__ = ["marginal_dw_dkappa", "sample_marginal", "sample_marginal_mh"]

#: Gauss–Legendre nodes of the implicit gradient: 24 give ~4e-10 relative error against mpmath (as 40 do).
QUADRATURE_NODES = 24
#: The implicit-gradient integral is truncated where the integrand has fallen by exp(-TAIL_LOG).
TAIL_LOG = 40.0


@functools.lru_cache(maxsize=16)
def _gauss_legendre(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Gauss–Legendre nodes and weights on [0, 1] (Golub–Welsch), float64."""
    k = torch.arange(1, n, dtype=torch.float64)
    beta = k / torch.sqrt(4.0 * k * k - 1.0)
    jacobi = torch.diag(beta, 1) + torch.diag(beta, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    weights = 2.0 * vectors[0] ** 2
    return ((nodes + 1.0) / 2.0).to(device), (weights / 2.0).to(device)


# ----------------------------------------------------------------------------------------------
# Exact samplers. Inputs: kappa of shape (n,) in float64. Outputs: w and 1 - w, shape (n,).
# ----------------------------------------------------------------------------------------------


def _sample_circle(kappa: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """m = 2: von Mises angle theta; returns (w, 1 - w, sign(theta))."""
    theta = torch.distributions.VonMises(
        torch.zeros_like(kappa), kappa, validate_args=False
    ).sample()
    half = torch.sin(0.5 * theta)
    return torch.cos(theta), 2.0 * half * half, torch.where(theta < 0, -1.0, 1.0).to(kappa)


def _sample_sphere3(kappa: Tensor) -> tuple[Tensor, Tensor]:
    """m = 3: inverse CDF, exact and stable for every kappa > 0."""
    u = torch.rand_like(kappa)
    one_minus_w = -torch.log1p((1.0 - u) * torch.expm1(-2.0 * kappa)) / kappa
    one_minus_w = one_minus_w.clamp(0.0, 2.0)
    return 1.0 - one_minus_w, one_minus_w


def _wood_envelope(dim: int, kappa: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Wood's envelope: b, 1 - x0 and log(1 - x0^2), all without cancellation."""
    b = (dim - 1) / (2.0 * kappa + torch.sqrt(4.0 * kappa * kappa + (dim - 1) ** 2))
    one_minus_x0 = 2.0 * b / (1.0 + b)
    log_one_minus_x0_sq = math.log(4.0) + torch.log(b) - 2.0 * torch.log1p(b)
    return b, one_minus_x0, log_one_minus_x0_sq


def _wood_propose(dim: int, b: Tensor) -> tuple[Tensor, Tensor]:
    """Draw w from Wood's envelope: eps ~ Beta((m-1)/2, (m-1)/2), w = (1-(1+b)eps)/(1-(1-b)eps)."""
    alpha = torch.full_like(b, 0.5 * (dim - 1))
    g1, g2 = torch._standard_gamma(alpha), torch._standard_gamma(alpha)
    eps = g1 / (g1 + g2)
    denom = 1.0 - (1.0 - b) * eps
    one_minus_w = 2.0 * b * eps / denom
    return 1.0 - one_minus_w, one_minus_w


def _wood_log_ratio(dim: int, kappa: Tensor, w: Tensor, one_minus_w: Tensor, env) -> Tensor:
    """log f(w)/g(w) up to the constant that makes its maximum 0 (the acceptance log-probability)."""
    _, one_minus_x0, log_one_minus_x0_sq = env
    one_minus_x0w = one_minus_w + w * one_minus_x0  # = 1 - x0 w
    return kappa * (one_minus_x0 - one_minus_w) + (dim - 1) * (
        torch.log(one_minus_x0w) - log_one_minus_x0_sq
    )


def _sample_wood(dim: int, kappa: Tensor) -> tuple[Tensor, Tensor]:
    """m >= 4 (valid for every m >= 2): Wood's rejection sampler, batched over pending samples."""
    w = torch.empty_like(kappa)
    one_minus_w = torch.empty_like(kappa)
    pending = torch.arange(kappa.numel(), device=kappa.device)
    while pending.numel() > 0:
        k = kappa[pending]
        env = _wood_envelope(dim, k)
        w_new, omw_new = _wood_propose(dim, env[0])
        accept = _wood_log_ratio(dim, k, w_new, omw_new, env) >= torch.log(torch.rand_like(k))
        accepted = pending[accept]
        w[accepted] = w_new[accept]
        one_minus_w[accepted] = omw_new[accept]
        pending = pending[~accept]
    return w, one_minus_w


def sample_marginal(dim: int, kappa: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Exact draws of :math:`w = \\mu^\\top z` for vMF concentrations ``kappa`` (any shape).

    Computed in float64. Returns ``(w, 1 - w, sign)`` where ``sign`` is the sign of the von Mises angle
    for ``dim == 2`` (the tangent direction on :math:`S^1`) and ``None`` otherwise.
    """
    flat = kappa.detach().reshape(-1).to(torch.float64)
    sign = None
    if dim == 2:
        w, omw, sign = _sample_circle(flat)
        sign = sign.reshape(kappa.shape)
    elif dim == 3:
        w, omw = _sample_sphere3(flat)
    else:
        w, omw = _sample_wood(dim, flat)
    return w.reshape(kappa.shape), omw.reshape(kappa.shape), sign


def sample_marginal_mh(dim: int, kappa: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Approximate draws of :math:`w` from an independence Metropolis–Hastings chain.

    The chain starts at a draw from Wood's envelope and takes ``steps`` MH steps with the envelope as
    proposal, targeting the exact marginal :math:`f(w)`. After ``steps`` steps the law of the state is
    the target up to a total-variation error that decays geometrically in ``steps`` (the rate is the
    rejection probability of Wood's sampler, small for most :math:`(m, \\kappa)`). Every step costs one
    proposal for every sample with no synchronisation, so it suits accelerators; the exact sampler
    (:func:`sample_marginal`) is the default.
    """
    if steps < 0:
        raise ValueError(f"mh_steps must be >= 0, got {steps}")
    flat = kappa.detach().reshape(-1).to(torch.float64)
    env = _wood_envelope(dim, flat)
    w, omw = _wood_propose(dim, env[0])
    log_ratio = _wood_log_ratio(dim, flat, w, omw, env)
    for _ in range(steps):
        w_new, omw_new = _wood_propose(dim, env[0])
        log_ratio_new = _wood_log_ratio(dim, flat, w_new, omw_new, env)
        accept = log_ratio_new - log_ratio >= torch.log(torch.rand_like(flat))
        w = torch.where(accept, w_new, w)
        omw = torch.where(accept, omw_new, omw)
        log_ratio = torch.where(accept, log_ratio_new, log_ratio)
    return w.reshape(kappa.shape), omw.reshape(kappa.shape)


# ----------------------------------------------------------------------------------------------
# Implicit reparameterisation gradient dw/dkappa.
# ----------------------------------------------------------------------------------------------


def _truncation_length(
    dim: int,
    kappa: Tensor,
    w: Tensor,
    omw: Tensor,
    side_len: Tensor,
    lower: Tensor,
    tail: float,
    bisections: int,
) -> Tensor:
    """Distance s from w, on the chosen side, where f has fallen by exp(-tail) (clipped to the side).

    Used for m = 2 and m >= 4 (m = 3 has a closed form). For m >= 4, g(t) = log f(t) = kappa t + a log(1 - t^2) is concave with g'' <= -2a, which bounds s from
    above; h(s) = g(w) - g(w -/+ s) - tail is increasing and convex, so chords give lower bounds, and
    bisection on log s (robust next to the logarithmic singularity at t = -/+1, where Newton's method
    stalls) brings the bound close to the root, always from above, so the truncation error stays below
    exp(-tail).
    """
    if dim == 2:
        # f ∝ e^{kappa t} (1-t^2)^{-1/2}: the exponential sets the decay of the lower side; the upper
        # side is integrated whole, its singularity being removed by the substitution.
        return torch.where(lower, torch.minimum(side_len, tail / kappa), side_len)
    a = 0.5 * (dim - 3)
    one_minus_w_sq = omw * (2.0 - omw)
    slope = (kappa - 2.0 * a * w / one_minus_w_sq).abs()  # |g'(w)|, g decreasing along the side
    bound = 2.0 * tail / (slope + torch.sqrt(slope * slope + 4.0 * a * tail))
    hi = torch.minimum(bound, side_len)
    direction = torch.where(lower, -1.0, 1.0).to(w)
    log_one_minus_w_sq = torch.log(one_minus_w_sq)

    def fallen(s: Tensor) -> Tensor:  # h(s) + tail = g(w) - g(w -/+ s)
        t_omt = omw - direction * s  # 1 - t with t = w + direction * s
        log_one_minus_t_sq = torch.log((t_omt * (2.0 - t_omt)).clamp_min(1e-300))
        return -(kappa * direction * s + a * (log_one_minus_t_sq - log_one_minus_w_sq))

    # h is convex with h(0) = -tail, so the chord from 0 lies above it: s* >= s tail / fallen(s) for
    # any s >= s*. That lower end makes the bracket narrow from the start.
    lo = hi * (tail / fallen(hi).clamp_min(tail))
    for _ in range(bisections):
        mid = torch.sqrt(lo * hi)
        drop = fallen(mid)
        past = drop >= tail
        hi = torch.where(past, mid, hi)
        lo = torch.where(past, torch.maximum(lo, mid * (tail / drop.clamp_min(tail))), mid)
    return hi


#: m = 2: above this kappa (1 - w), a w >= 0 below the mean is integrated on its lower side
#: (see :func:`_dw_dkappa_circle`)
CIRCLE_LOWER_TAIL = 3.0

#: Floor of L = log(1 + s/near) in the graded substitution (see :func:`_dw_dkappa_graded`).
MIN_LOG_GROWTH = 1e-30

#: Samples per chunk of the quadrature, by node dtype: (chunk, nodes) temporaries of ~1 MB stay in
#: cache (one (1e5, 24) float64 temporary is 19 MB, and page faults on such blocks dominated the
#: cost), while chunks this large keep the per-chunk overhead of the truncation search small
#: (measured on a 2-core x86 CPU: 16384 float32 / 8192 float64 samples were fastest).
QUADRATURE_CHUNK = {torch.float32: 16384, torch.float64: 8192}


#: Largest dimension whose quadrature nodes run in float32 for float32 results (relative error of
#: dw/dkappa <= 1e-6 for 5 <= m <= 32, <= 4e-6 at m = 4; larger m cancel bigger terms in the
#: log-integrand).
FLOAT32_NODES_MAX_DIM = 32


class QuadratureSettings(NamedTuple):
    """How the implicit gradient is integrated (see :func:`quadrature_settings`)."""

    nodes: int  # Gauss–Legendre nodes
    tail: float  # truncation where the integrand has fallen by exp(-tail)
    bisections: int  # steps of the truncation search
    node_dtype: torch.dtype  # dtype of the per-node arithmetic


def quadrature_settings(dim: int, dtype: torch.dtype) -> QuadratureSettings:
    """The implicit-gradient quadrature for results of ``dtype``: accuracy follows the precision.

    float64 gets :data:`QUADRATURE_NODES` float64 nodes, truncation at ``exp(-TAIL_LOG)`` and 10
    bisections: relative error ~1e-10 against mpmath, but not below ~1e-13 kappa for large kappa
    (2.7e-7 seen at m = 2, kappa = 1e7): the integrand's t - A takes the rounding of the mean
    resultant A (relative to A, ~1e-14) as an error relative to 1 - A ~ (m - 1) / (2 kappa).

    Lower precisions get 16 nodes, truncation at ``exp(-20)`` and 6 bisections, with the per-node arithmetic in float32 for
    ``dim <= FLOAT32_NODES_MAX_DIM``: relative error <= 1e-6 for ``5 <= dim <= 32`` and <= 4e-6 at
    ``dim = 4`` (largest next to the mode at large kappa: 3e-6 at kappa = 1e7, where 6 bisections
    leave a loose truncation), < 1e-7 with the float64 nodes of ``dim > 32`` (measured against the
    float64 path for kappa in [1e-3, 1e7]); far below the Monte-Carlo noise of any gradient
    estimate, at about half the cost.
    """
    if dtype == torch.float64:
        return QuadratureSettings(QUADRATURE_NODES, TAIL_LOG, 10, torch.float64)
    node_dtype = torch.float32 if dim <= FLOAT32_NODES_MAX_DIM else torch.float64
    return QuadratureSettings(16, 20.0, 6, node_dtype)


def marginal_dw_dkappa(
    dim: int,
    kappa: Tensor,
    w: Tensor,
    one_minus_w: Tensor,
    *,
    result_dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Implicit reparameterisation derivative :math:`\\partial w / \\partial \\kappa` (float64 inputs).

    Closed form for ``dim == 3``; Gauss–Legendre quadrature (module docstring) otherwise, in chunks of
    :data:`QUADRATURE_CHUNK` samples, as accurate as ``result_dtype`` needs (:func:`quadrature_settings`).
    The result is float64.
    """
    kappa, w, omw = torch.broadcast_tensors(kappa, w, one_minus_w)
    if dim == 3:
        return _dw_dkappa_sphere3(kappa, omw)
    shape = kappa.shape
    kappa, w, omw = kappa.reshape(-1), w.reshape(-1), omw.reshape(-1)
    settings = quadrature_settings(dim, result_dtype)
    rule = _graded_rule(settings.nodes, kappa.device)
    chunk = QUADRATURE_CHUNK[settings.node_dtype]
    quadrature = _dw_dkappa_circle if dim == 2 else _dw_dkappa_graded
    pieces = [
        quadrature(
            dim,
            kappa[i : i + chunk],
            w[i : i + chunk],
            omw[i : i + chunk],
            rule,
            settings,
        )
        for i in range(0, kappa.numel(), chunk)
    ]
    return torch.cat(pieces).reshape(shape) if pieces else torch.zeros(shape, dtype=kappa.dtype)


def _dw_dkappa_sphere3(kappa: Tensor, omw: Tensor) -> Tensor:
    """m = 3: F(w) = expm1(kappa (1 + w)) / expm1(2 kappa), so with x = 1 - w
    dw/dkappa = (x - 2 e^{-kappa (2 - x)} expm1(-kappa x) / expm1(-2 kappa)) / kappa."""
    ratio = torch.exp(-kappa * (2.0 - omw)) * torch.expm1(-kappa * omw) / torch.expm1(-2.0 * kappa)
    return (omw - 2.0 * ratio) / kappa


@functools.lru_cache(maxsize=16)
def _graded_rule(n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gauss–Legendre nodes ``v`` and weights on [0, 1], and for ``v' = 1 - (1 - v)^2``: the nodes ``v'``
    and the weights times ``dv'/dv``."""
    nodes, weights = _gauss_legendre(n, device)
    return nodes, weights, 1.0 - (1.0 - nodes) ** 2, weights * 2.0 * (1.0 - nodes)


def _dw_dkappa_graded(
    dim: int, kappa: Tensor, w: Tensor, omw: Tensor, rule, settings: QuadratureSettings
) -> Tensor:
    """m >= 4: the quadrature on the side of w away from the mode, for one chunk of flat samples.

    With q the distance from w along the side (length ``side``) and ``near`` the distance from w to the
    opposite endpoint, f(t)/f(w) = exp(±kappa q) ((near + q)/near)^a ((side - q)/side)^a. Both endpoint
    singularities are smoothed by one substitution, q = near (exp(L v') - 1) with v' = 1 - (1 - v)^2 and
    L = log(1 + s/near) (s the truncation length): log-graded at w, so (near + q)^a = near^a e^{a L v'} is
    smooth however close the opposite endpoint is (w next to the mode, mode next to 1), and quadratic at
    the side's endpoint, so (side - q)^a has an integer power of (1 - v) when the side is integrated whole.
    L is floored at :data:`MIN_LOG_GROWTH`, with s / expm1(L) in place of near, so that no float32
    node quantity underflows next to the pole.
    """
    _, _, v_graded, weights = rule
    mean = ive_ratio(0.5 * dim - 1.0, kappa)
    a = 0.5 * (dim - 3)
    mode = kappa / (a + torch.sqrt(a * a + kappa * kappa))
    lower = w <= mode
    one_plus_w = 2.0 - omw
    side = torch.where(lower, one_plus_w, omw)  # towards -1 (lower) or +1 (upper)
    near = torch.where(lower, omw, one_plus_w).clamp_min(1e-300)
    s = _truncation_length(dim, kappa, w, omw, side, lower, settings.tail, settings.bisections)
    node_dtype = settings.node_dtype
    # L = log(1 + s/near), floored: next to the pole (1 - w below ~1e-38 on the upper side, where
    # L ~ s/2) float32 nodes met a subnormal or zero q = near (e^{L v'} - 1) times an infinite
    # -1/side (NaN from 0 * inf, or a wrong value). With scale = s / expm1(L) (= near, or
    # s / MIN_LOG_GROWTH where L is floored), q = scale (e^{L v'} - 1) maps [0, 1] onto [0, s], and
    # below the floor log((near + q)/near) = L v' still holds to 1e-30.
    log_growth = torch.log1p(s / near).clamp_min(MIN_LOG_GROWTH)
    scale = torch.minimum(near, s / MIN_LOG_GROWTH)
    direction = torch.where(lower, -1.0, 1.0).to(w)

    # In-place and fused ops on the (n, nodes) temporaries: this loop is the cost of the vMF rsample.
    # They run in node_dtype (see quadrature_settings) on e = e^{L v'} - 1: from expm1 (no
    # cancellation), and a normal float32 with the floor on L (L v' >= 4e-33). q / side is
    # e (scale / side), its coefficient scale / side <= 1 / expm1(L) <= 1e30 formed in float64
    # like the other per-sample quantities.
    exponent = (log_growth.to(node_dtype).unsqueeze(-1)) * v_graded.to(node_dtype)  # L v'
    e = torch.expm1(exponent)
    # log of f(t)/f(w) dt/dv' = ±kappa q + a log((near + q)/near) + a log((side - q)/side) + L v' + const
    minus_scale_over_side = (-scale / side.clamp_min(1e-300)).to(node_dtype).unsqueeze(-1)
    log_ratio = torch.addcmul(torch.ones_like(e), e, minus_scale_over_side).clamp_min_(1e-30)
    log_ratio.log_().mul_(a).add_(exponent, alpha=a + 1.0)
    q = e.mul_(scale.to(node_dtype).unsqueeze(-1))  # may underflow, harmlessly: it is only added
    log_ratio.addcmul_((direction * kappa).to(node_dtype).unsqueeze(-1), q)
    offset = torch.addcmul(
        (w - mean).to(node_dtype).unsqueeze(-1), direction.to(node_dtype).unsqueeze(-1), q
    )  # t - A
    integral = (offset * log_ratio.exp_()) @ weights.to(node_dtype)
    integral = integral.to(torch.float64) * (scale * log_growth)
    # lower: dw/dk = -int_{-1}^{w}; upper: dw/dk = +int_{w}^{1}
    grad = torch.where(lower, -integral, integral)
    return torch.where(side > 0, grad, torch.zeros_like(grad))


def _dw_dkappa_circle(
    dim: int, kappa: Tensor, w: Tensor, omw: Tensor, rule, settings: QuadratureSettings
) -> Tensor:
    """m = 2: f ∝ e^{kappa t} (1 - t^2)^{-1/2}, integrated on one side of w.

    The upper side [w, 1] is used where w >= 0, unless w lies in the lower tail of the concentrated
    density (kappa (1 - w) > :data:`CIRCLE_LOWER_TAIL`, w below the mean A): there t - A changes sign
    on [w, 1] and the integral is a cancellation of O(1) terms to about F(w) (a NaN or 1e100 at
    kappa (1 - w) ~ 50), so the lower side [-1, w] is taken, where t - A < 0 throughout. The
    substitution t = ±(1 - side u^2) removes the far endpoint's singularity; the near endpoint is
    at distance >= 1 from w (w < 0 on the lower side, w >= 0 on the upper side), or at distance
    1 - w > CIRCLE_LOWER_TAIL / kappa, a fair fraction of the truncated side, so its singularity
    stays far enough from the nodes. Nodes in float64.
    """
    nodes, weights = rule[0], rule[1]
    mean = ive_ratio(0.0, kappa)
    lower = (w < 0) | ((kappa * omw > CIRCLE_LOWER_TAIL) & (w < mean))
    one_plus_w = 2.0 - omw
    side_len = torch.where(lower, one_plus_w, omw)  # |side| = 1 + w (lower) or 1 - w (upper)
    other_len = torch.where(lower, omw, one_plus_w)
    s = _truncation_length(dim, kappa, w, omw, side_len, lower, settings.tail, settings.bisections)
    safe_len = side_len.clamp_min(1e-300)
    u_lo = torch.sqrt((1.0 - s / safe_len).clamp(min=0.0))

    u = u_lo.unsqueeze(-1) + (1.0 - u_lo).unsqueeze(-1) * nodes  # (n, nodes)
    ell = side_len.unsqueeze(-1)
    one_minus_u_sq = (1.0 - u) * (1.0 + u)
    sign = torch.where(lower, -1.0, 1.0).to(w).unsqueeze(-1)  # t = sign * (1 - ell u^2)
    # log of f(t)/f(w) * dt/du with t = w + sign * ell (1 - u^2):
    #   kappa (t - w) - 1/2 log((1 - t^2)/(1 - w^2)) + log(2 ell u),
    #   (1 - t^2)/(1 - w^2) = u^2 (other + ell (1 - u^2)) / other
    other = other_len.clamp_min(1e-300).unsqueeze(-1)
    log_integrand = (
        (sign * kappa.unsqueeze(-1) * ell) * one_minus_u_sq
        + torch.log(2.0 * ell)
        - 0.5 * torch.log1p(ell * one_minus_u_sq / other)
    )
    t = sign * (1.0 - ell * u * u)
    integrand = (t - mean.unsqueeze(-1)) * torch.exp(log_integrand)
    integral = (integrand @ weights) * (1.0 - u_lo)
    grad = torch.where(lower, -integral, integral)
    return torch.where(side_len > 0, grad, torch.zeros_like(grad))

"""Accuracy of :class:`MobiusMixture` next to the poles of its axis, against mpmath (40 digits).

Near the antipode :math:`-\\mu` the mapped angle :math:`g(\\theta)` is close to :math:`\\pi`, where
:math:`\\sin g` evaluated from a rounded :math:`g` keeps no digits; near both poles the polar
decomposition :math:`x = \\cos\\theta\\,\\mu + \\text{perp}` cancels. The reference is evaluated on the
exact values of the inputs the transform sees (its own rounded axis, scales and weights, the latter
renormalised to sum to one, and the rounded points), so the comparison measures the rounding of the
computation only.

Tolerances: :math:`g'(\\theta)` and :math:`\\sin g/\\sin\\theta` are sums and products of positive terms,
each computed to a few ulps, so the log-determinant is accurate to a small multiple of
:math:`(m-1)\\,\\epsilon` and the points to a small multiple of :math:`\\epsilon` (observed: at most
:math:`8 (m-1)\\epsilon`, resp. :math:`\\epsilon`; asserted: 16 times these).
"""

from __future__ import annotations

import math

import mpmath as mp
import pytest
import torch

from pyro_svae.flows import MobiusMixture

#: log-scales: spread (as in the other tests), all > 0 (g'(pi) = sum rho / lambda small, so pi - g is
#: much smaller than pi - theta, the worst case at the antipode), all < 0 (the same at the axis)
SCALES = {
    "spread": [-3.0, -1.0, 1.0, 3.0],
    "expanding": [2.5, 4.0],
    "contracting": [-4.0, -2.5],
}
DELTAS = (1e-3, 2e-4, 1e-5, 1e-7)


def _raw(m: int, log_scale: list[float], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Mixture parameters: a random axis and weights, the given log-scales."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(m, generator=g, dtype=torch.float64)
    logits = torch.randn(len(log_scale), generator=g, dtype=torch.float64)
    return torch.cat([axis, torch.tensor(log_scale, dtype=torch.float64), logits]).to(dtype)


def _mixture(m: int, log_scale: list[float], dtype: torch.dtype) -> MobiusMixture:
    return MobiusMixture(_raw(m, log_scale, dtype), m)


def _points(axis: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Points at polar angles delta and pi - delta from the (rounded) ``axis``, for every delta in
    :data:`DELTAS`, at a few generic angles, and exactly on both poles; rounded to ``axis.dtype``."""
    g = torch.Generator().manual_seed(seed)
    mu = axis.double()
    mu = mu / mu.norm()
    angles = [a for d in DELTAS for a in (d, math.pi - d)] + [0.3, math.pi / 2, 2.5]
    rows = []
    for angle in angles:
        v = torch.randn(len(mu), generator=g, dtype=torch.float64)
        v = v - (v @ mu) * mu
        rows.append(math.cos(angle) * mu + math.sin(angle) * v / v.norm())
    x = torch.stack(rows).to(axis.dtype)
    return torch.cat([x, axis.unsqueeze(0), -axis.unsqueeze(0)])


def _reference(x: torch.Tensor, t: MobiusMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward map and log-determinant of ``t`` at ``x``, in mpmath, on the exact input values."""
    axis, log_scale, weights = (p.detach().double().tolist() for p in t.params())
    m = len(axis)
    points, logdets = [], []
    with mp.workdps(40):
        mu = [mp.mpf(a) for a in axis]
        norm = mp.sqrt(mp.fsum(a * a for a in mu))
        mu = [a / norm for a in mu]
        lam = [mp.exp(mp.mpf(s)) for s in log_scale]
        rho = [mp.mpf(w) for w in weights]
        rho = [w / mp.fsum(rho) for w in rho]  # sum exactly 1, so that g(pi) = pi
        for row in x.detach().double().tolist():
            xs = [mp.mpf(v) for v in row]
            along = mp.fsum(a * b for a, b in zip(xs, mu, strict=True))
            perp = [v - along * a for v, a in zip(xs, mu, strict=True)]
            p = mp.sqrt(mp.fsum(v * v for v in perp))
            if p < mp.mpf(10) ** -30:  # on a pole, up to the 40-digit rounding of the axis's norm
                p = mp.mpf(0)
            theta = mp.atan2(p, along)
            s, c = mp.sin(theta / 2), mp.cos(theta / 2)
            angle = mp.fsum(r * 2 * mp.atan2(a * s, c) for r, a in zip(rho, lam, strict=True))
            slope = mp.fsum(r * a / (c**2 + a**2 * s**2) for r, a in zip(rho, lam, strict=True))
            ratio = mp.sin(angle) / mp.sin(theta) if p > 0 else slope
            logdets.append(float(mp.log(slope) + (m - 2) * mp.log(ratio)))
            tangent = [v / p for v in perp] if p > 0 else [0] * m
            points.append(
                [
                    float(mp.cos(angle) * a + mp.sin(angle) * v)
                    for a, v in zip(mu, tangent, strict=True)
                ]
            )
    return torch.tensor(points, dtype=torch.float64), torch.tensor(logdets, dtype=torch.float64)


def _tolerances(dtype: torch.dtype, m: int) -> tuple[float, float]:
    """(points, log-determinant): 16 ulps, and 16 ulps per dimension of the sphere."""
    eps = torch.finfo(dtype).eps
    return 16 * eps, 16 * (m - 1) * eps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scales", list(SCALES), ids=list(SCALES))
@pytest.mark.parametrize("m", [2, 3, 5])
def test_mixture_accurate_near_both_poles(m, scales, dtype):
    t = _mixture(m, SCALES[scales], dtype)
    x = _points(t.params()[0])
    y = t(x)
    logdet = t.log_abs_det_jacobian(x, y)
    assert y.dtype == logdet.dtype == dtype
    assert torch.isfinite(y).all()
    assert torch.isfinite(logdet).all()
    atol_y, atol_logdet = _tolerances(dtype, m)
    assert ((y.double().norm(dim=-1) - 1).abs() < atol_y).all()
    y_ref, logdet_ref = _reference(x, t)
    err_y = (y.double() - y_ref).abs().max(-1).values
    err_logdet = (logdet.double() - logdet_ref).abs()
    assert (err_y < atol_y).all(), err_y
    assert (err_logdet < atol_logdet).all(), (err_logdet, logdet, logdet_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scales", list(SCALES), ids=list(SCALES))
def test_mixture_inverse_accurate_near_both_poles(scales, dtype):
    """The inverse recovers the points: the error is rounding amplified by the inverse's Lipschitz
    constant :math:`\\max 1/g' \\le \\max_k \\max(\\lambda_k, 1/\\lambda_k) = e^4`."""
    m = 4
    t = _mixture(m, SCALES[scales], dtype)
    x = _points(t.params()[0])
    y = t(x)
    back = t._inverse(y)
    assert torch.isfinite(back).all()
    err = (back.double() - x.double()).abs().max()
    assert err < 16 * math.exp(4.0) * torch.finfo(dtype).eps, err


@pytest.mark.parametrize("scales", list(SCALES), ids=list(SCALES))
def test_mixture_float32_gradients_near_both_poles(scales):
    """Gradients of the points and log-determinants in the parameters and the points are finite next to
    and on the poles, and those of each log-determinant in the parameters match float64's to 1e-4
    (observed: 2e-5, for gradients up to 16): the backward pass has no cancellation of two terms of size
    1/delta either."""
    m = 4
    x32 = _points(_mixture(m, SCALES[scales], torch.float32).params()[0])
    grads = {}
    for dtype in (torch.float32, torch.float64):
        raw = _raw(m, SCALES[scales], torch.float32).to(dtype).requires_grad_()
        x = x32.to(dtype).requires_grad_()
        t = MobiusMixture(raw, m)
        y = t(x)
        logdet = t.log_abs_det_jacobian(x, y)
        for g in torch.autograd.grad((y.sum(), logdet.sum()), [raw, x], retain_graph=True):
            assert torch.isfinite(g).all()
        rows = [torch.autograd.grad(value, raw, retain_graph=True)[0] for value in logdet]
        grads[dtype] = torch.stack(rows).double()
    g32, g64 = grads[torch.float32], grads[torch.float64]
    assert torch.allclose(g32, g64, rtol=1e-4, atol=1e-4), (g32 - g64).abs().max(-1).values


def test_mixture_log_scales_bounded():
    """Moderate log-scales are used as given; large ones are bounded, smoothly, by that of the Möbius
    steps, log(1.99 / 0.01), so that float32 neither overflows nor underflows the scales."""
    m = 3
    moderate = torch.linspace(-4.0, 4.0, 9)
    t = MobiusMixture(torch.cat([torch.ones(m), moderate, torch.zeros(9)]), m)
    assert torch.equal(t.params()[1], moderate)
    # continuously differentiable at the knee 4, increasing beyond
    knee = torch.tensor([-4.001, -3.999, 3.999, 4.001], dtype=torch.float64, requires_grad=True)
    raw = torch.cat([torch.ones(m, dtype=torch.float64), knee, torch.zeros(4, dtype=torch.float64)])
    (slope,) = torch.autograd.grad(MobiusMixture(raw, m).params()[1].sum(), knee)
    assert torch.allclose(slope, torch.ones(4, dtype=torch.float64), atol=1e-5)
    huge = torch.tensor([-1e4, -80.0, -20.0, 20.0, 80.0, 1e4])
    raw = torch.cat([torch.ones(m), huge, torch.zeros(6)]).requires_grad_()
    t = MobiusMixture(raw, m)
    log_scale = t.params()[1]
    bound = math.log((1 + 0.99) / (1 - 0.99))
    assert (log_scale.abs() <= bound + 1e-6).all()
    assert (log_scale.diff() >= 0).all()
    x = _points(t.params()[0])
    y = t(x)
    logdet = t.log_abs_det_jacobian(x, y)
    assert torch.isfinite(y).all()
    assert torch.isfinite(logdet).all()
    assert torch.allclose(t._inverse(y), x, atol=16 * math.exp(bound) * torch.finfo(x.dtype).eps)
    logdet.sum().backward()
    assert torch.isfinite(raw.grad).all()


@pytest.mark.parametrize("m", [2, 3, 5])
def test_mixture_gradients_on_the_equator(m):
    """Points with x . mu == 0 exactly (axis-aligned inputs): the branch choice about the nearer
    pole must not drop the derivative along the axis (``abs`` has none at 0)."""
    axis = torch.zeros(m, dtype=torch.float64)
    axis[0] = 1.0
    raw = torch.cat([axis, torch.tensor([-1.0, 0.5, 2.0]), torch.tensor([0.2, -0.3, 0.1])])
    x = torch.zeros(2, m, dtype=torch.float64)
    x[0, 1] = 1.0
    x[1, -1] = -1.0 if m == 2 else 0.8  # (0, ..., 0.6, 0.8) for m >= 3
    if m >= 3:
        x[1, -2] = 0.6

    def forward(points, params):
        t = MobiusMixture(params, m)
        y = t(points)
        return y, t.log_abs_det_jacobian(points, y)

    inputs = (x.clone().requires_grad_(), raw.clone().requires_grad_())
    assert torch.autograd.gradcheck(forward, inputs, eps=1e-6, atol=1e-7)
    inverse = lambda y, params: MobiusMixture(params, m).inv(y)  # noqa: E731
    assert torch.autograd.gradcheck(inverse, inputs, eps=1e-6, atol=1e-6)

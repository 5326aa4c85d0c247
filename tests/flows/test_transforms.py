"""Invertibility and exact log-determinants of the flow steps, against autograd Jacobians."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch.autograd.functional import jacobian

from pyro_svae.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from pyro_svae.flows import (
    AdditiveCoupling,
    DiagonalScaling,
    EuclideanFlow,
    FlowTerm,
    MobiusTransform,
    SphereFlow,
    SphereHouseholder,
    parse_flow_spec,
)
from pyro_svae.flows.euclidean import CouplingNet

D, H = 5, 7


def _randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)


def _euclidean_transforms(kind: str, amortized: bool, context: torch.Tensor):
    flow = EuclideanFlow(
        D, parse_flow_spec(kind).terms, context_dim=H if amortized else None, coupling_hidden=8
    ).double()
    _randomize(flow)
    return flow.transforms(context if amortized else None)


def _compose(transforms, x):
    total = 0.0
    for t in transforms:
        y = t(x)
        total = total + t.log_abs_det_jacobian(x, y)
        x = y
    return x, total


@pytest.mark.parametrize("amortized", [False, True], ids=["static", "amortized"])
@pytest.mark.parametrize("kind", ["planar:2", "radial:2", "householder:3", "nice:3"])
def test_euclidean_logdet_matches_autograd(kind, amortized):
    torch.manual_seed(1)
    context = torch.randn(1, H, dtype=torch.float64)
    transforms = _euclidean_transforms(kind, amortized, context)
    for _ in range(3):
        x = torch.randn(1, D, dtype=torch.float64)
        _y, logdet = _compose(transforms, x)
        jac = jacobian(lambda v: _compose(transforms, v.unsqueeze(0))[0].squeeze(0), x[0])
        expected = torch.linalg.slogdet(jac).logabsdet
        assert logdet.shape == (1,)
        assert torch.allclose(logdet[0], expected, atol=1e-8), (logdet, expected)


@pytest.mark.parametrize("amortized", [False, True], ids=["static", "amortized"])
@pytest.mark.parametrize("kind", ["householder:3", "nice:4"])
def test_euclidean_invertible(kind, amortized):
    torch.manual_seed(2)
    context = torch.randn(6, H, dtype=torch.float64)
    transforms = _euclidean_transforms(kind, amortized, context)
    x = torch.randn(3, 6, D, dtype=torch.float64)  # extra leading dim: importance particles
    y, logdet = _compose(transforms, x)
    assert logdet.shape == (3, 6)
    for t in reversed(transforms):
        y = t._inverse(y)  # bypass the cache
    assert torch.allclose(y, x, atol=1e-10)


def test_coupling_and_scaling_details():
    torch.manual_seed(3)
    net = CouplingNet(2, 3, hidden=4).double()
    _randomize(net)
    for flip in (False, True):
        t = AdditiveCoupling(2 if not flip else 3, net, flip=flip)
        x = torch.randn(4, D, dtype=torch.float64)
        y = t(x)
        kept = slice(0, 2) if not flip else slice(3, 5)
        assert torch.equal(y[:, kept], x[:, kept])
        assert torch.allclose(t._inverse(y), x)
        assert torch.equal(t.log_abs_det_jacobian(x, y), torch.zeros(4, dtype=torch.float64))
    s = torch.randn(D, dtype=torch.float64)
    scale = DiagonalScaling(s)
    x = torch.randn(4, D, dtype=torch.float64)
    assert torch.allclose(scale.log_abs_det_jacobian(x, scale(x)), s.sum().expand(4))
    assert torch.allclose(scale._inverse(scale(x)), x)


def test_transformed_gaussian_log_prob_includes_logdets():
    torch.manual_seed(4)
    transforms = _euclidean_transforms("planar:3+nice:2", False, None)
    base = dist.Normal(torch.zeros(D, dtype=torch.float64), 1.0).to_event(1)
    q = dist.TransformedDistribution(base, transforms)
    z0 = base.sample((10,))
    zk, logdet = _compose(transforms, z0)
    assert torch.allclose(q.log_prob(zk), base.log_prob(z0) - logdet)


# ------------------------------------------------------------------------------------------------
# Sphere flows
# ------------------------------------------------------------------------------------------------


def _tangent_basis(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(m, m-1)`` of the tangent space at the unit vector ``x``."""
    m = x.shape[-1]
    q, _ = torch.linalg.qr(torch.cat([x.unsqueeze(-1), torch.randn(m, m - 1, dtype=x.dtype)], -1))
    return q[:, 1:]


def _sphere_logdet(f, x: torch.Tensor) -> torch.Tensor:
    jac = jacobian(f, x)
    y = f(x)
    return torch.linalg.slogdet(_tangent_basis(y).T @ jac @ _tangent_basis(x)).logabsdet


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("m", [2, 3, 5])
def test_mobius_inverse_and_logdet(m):
    torch.manual_seed(m)
    w_raw = torch.randn(m, dtype=torch.float64)
    t = MobiusTransform(w_raw)
    assert t.point().norm() < 1
    x = _unit(20, m)
    y = t(x)
    assert torch.allclose(y.norm(dim=-1), torch.ones(20, dtype=torch.float64))
    assert torch.allclose(t._inverse(y), x, atol=1e-10)
    logdet = t.log_abs_det_jacobian(x, y)
    assert logdet.shape == (20,)
    for i in range(4):
        expected = _sphere_logdet(lambda v: t(v.unsqueeze(0)).squeeze(0), x[i])
        assert torch.allclose(logdet[i], expected, atol=1e-8), (logdet[i], expected)
    assert torch.allclose(MobiusTransform(torch.zeros(m))(x.float()), x.float(), atol=1e-6)


@pytest.mark.parametrize("m", [3, 6])
def test_sphere_householder_isometry(m):
    torch.manual_seed(m)
    t = SphereHouseholder(torch.randn(3, m, dtype=torch.float64))
    x = _unit(5, m)
    y = t(x)
    assert torch.allclose(t._inverse(y), x, atol=1e-12)
    assert torch.allclose(y.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    assert torch.equal(t.log_abs_det_jacobian(x, y), torch.zeros(5, dtype=torch.float64))
    expected = _sphere_logdet(lambda v: t(v.unsqueeze(0)).squeeze(0), x[0])
    assert abs(expected.item()) < 1e-10
    # a reflected vMF is the vMF with the reflected mean direction
    loc, kappa = _unit(m), torch.tensor(4.0, dtype=torch.float64)
    pushed = dist.TransformedDistribution(VonMisesFisher(loc, kappa), [t])
    direct = VonMisesFisher(t(loc.unsqueeze(0)).squeeze(0), kappa)
    assert torch.allclose(pushed.log_prob(y), direct.log_prob(y), atol=1e-10)


@pytest.mark.parametrize("amortized", [False, True], ids=["static", "amortized"])
@pytest.mark.parametrize("count", [1, 3])
def test_sphere_flow_composed_logdet(count, amortized):
    torch.manual_seed(5)
    m, n = 4, 2
    flow = SphereFlow(
        m, count, parse_flow_spec("householder:2+mobius:2").terms, H if amortized else None
    ).double()
    _randomize(flow)
    h = torch.randn(n, H, dtype=torch.float64)
    transforms = flow.transforms(h if amortized else None)
    batch = (count, n) if count > 1 else (n,)
    x = _unit(*batch, m)
    y, logdet = _compose(transforms, x)
    assert logdet.shape == batch
    idx = (0, 1) if count > 1 else (1,)

    def f(v):
        full = x.clone()
        full[idx] = v
        return _compose(transforms, full)[0][idx]

    expected = _sphere_logdet(f, x[idx])
    assert torch.allclose(logdet[idx], expected, atol=1e-8)
    back = y
    for t in reversed(transforms):
        back = t._inverse(back)
    assert torch.allclose(back, x, atol=1e-10)


@pytest.mark.parametrize("base_cls", [VonMisesFisher, PowerSpherical])
def test_pushed_density_normalized_on_circle(base_cls):
    """On S^1, the pushed density integrates to one (so the log-det is right, globally)."""
    torch.manual_seed(6)
    base = base_cls(_unit(2).float(), torch.tensor(3.0))
    q = dist.TransformedDistribution(
        base,
        [MobiusTransform(torch.tensor([0.8, -0.5])), SphereHouseholder(torch.randn(2, 2))],
    )
    theta = torch.linspace(0, 2 * math.pi, 4001)[:-1]
    grid = torch.stack([theta.cos(), theta.sin()], -1)
    total = q.log_prob(grid).exp().sum() * (2 * math.pi / 4000)
    assert abs(total.item() - 1.0) < 1e-3
    z = q.rsample((7,))
    assert z.shape == (7, 2)
    assert torch.allclose(z.norm(dim=-1), torch.ones(7), atol=1e-5)


def test_pushed_density_normalized_on_s2():
    """On S^2, E_uniform[q(z) / u(z)] = 1 (Monte Carlo, many points)."""
    torch.manual_seed(7)
    base = VonMisesFisher(_unit(3).float(), torch.tensor(2.0))
    q = dist.TransformedDistribution(base, [MobiusTransform(torch.tensor([0.3, 0.4, -0.5]))])
    u = HypersphericalUniform(3)
    z = u.sample((200000,))
    ratio = (q.log_prob(z) - u.log_prob(z)).exp().mean()
    assert abs(ratio.item() - 1.0) < 0.03


def test_sphere_flow_rejects_euclidean_kinds():
    with pytest.raises(ValueError, match="does not apply to spheres"):
        SphereFlow(3, 1, (FlowTerm("planar", 2),))
    with pytest.raises(ValueError, match="does not apply"):
        EuclideanFlow(3, (FlowTerm("mobius", 1),))

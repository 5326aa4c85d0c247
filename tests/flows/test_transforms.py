"""Invertibility and exact log-determinants of the flow steps, against autograd Jacobians."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms.planar import ConditionedPlanar
from torch.autograd.functional import jacobian
from torch.nn import functional as F

from pyro_svae.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from pyro_svae.flows import (
    AdditiveCoupling,
    BoundedPlanar,
    ConditionalBoundedPlanar,
    ConditionedBoundedPlanar,
    DiagonalScaling,
    EuclideanFlow,
    FlowTerm,
    MobiusMixture,
    MobiusTransform,
    SphereFlow,
    SphereHouseholder,
    bounded_u_hat,
    identity_planar_parameters,
    parse_flow_spec,
)
from pyro_svae.flows.euclidean import CouplingNet

D, H = 5, 7


def _randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)


def _euclidean_transforms(
    kind: str, amortized: bool, context: torch.Tensor, planar_min_det: float = 0.0
):
    flow = EuclideanFlow(
        D,
        parse_flow_spec(kind).terms,
        context_dim=H if amortized else None,
        coupling_hidden=8,
        planar_min_det=planar_min_det,
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
@pytest.mark.parametrize(
    ("kind", "min_det"),
    [
        ("planar:2", 0.0),
        ("planar:2", 0.4),
        ("radial:2", 0.0),
        ("householder:3", 0.0),
        ("nice:3", 0.0),
    ],
)
def test_euclidean_logdet_matches_autograd(kind, min_det, amortized):
    torch.manual_seed(1)
    context = torch.randn(1, H, dtype=torch.float64)
    transforms = _euclidean_transforms(kind, amortized, context, min_det)
    for _ in range(3):
        x = torch.randn(1, D, dtype=torch.float64)
        _y, logdet = _compose(transforms, x)
        jac = jacobian(lambda v: _compose(transforms, v.unsqueeze(0))[0].squeeze(0), x[0])
        expected = torch.linalg.slogdet(jac).logabsdet
        assert logdet.shape == (1,)
        assert torch.allclose(logdet[0], expected, atol=1e-8), (logdet, expected)


@pytest.mark.parametrize("amortized", [False, True], ids=["static", "amortized"])
def test_planar_starts_at_a_well_conditioned_identity(amortized):
    # Zero planar parameters would contract by log 2 along a random direction with |u_hat| ~ 1/|w|;
    # the library's initialisation is the identity (static: exactly; amortized: to within a few
    # hundredths, against 0.37 nats a step from zeros) with unit-norm w.
    torch.manual_seed(3)
    dim, context_dim, steps = 40, 128, 16
    flow = EuclideanFlow(
        dim, parse_flow_spec(f"planar:{steps}").terms, context_dim if amortized else None
    )
    context = torch.randn(200, context_dim).relu()  # like encoder features
    x = torch.randn(200, dim)
    for t in flow.transforms(context if amortized else None):
        bias, u, w = t._params() if callable(t._params) else t._params
        assert torch.allclose(w.norm(dim=-1), torch.ones(()), atol=0.1)
        y = t(x)
        step, logdet = (y - x).norm(dim=-1), t.log_abs_det_jacobian(x, y)
        step_tol, logdet_tol = (0.05, 0.03) if amortized else (1e-5, 1e-5)
        assert step.max() < step_tol
        assert logdet.abs().max() < logdet_tol
        x = y
    bias, u, w = identity_planar_parameters(dim)
    a = u @ w
    assert bias.shape == (1,)
    assert u.shape == w.shape == (dim,)
    assert torch.allclose(-1 + torch.nn.functional.softplus(a), torch.zeros(()), atol=1e-6)


def _collapsing_planar_parameters(dim: int, count: int) -> tuple[torch.Tensor, ...]:
    """Planar parameters ``(b, u, w)`` with w^T u far below -1, where Pyro's step nearly collapses
    the direction w (its w^T u_hat = -1 + softplus(w^T u) is just above -1)."""
    w = torch.randn(count, dim, dtype=torch.float64)
    u = (
        -torch.linspace(3.0, 30.0, count, dtype=torch.float64).unsqueeze(-1)
        * w
        / w.pow(2).sum(-1, keepdim=True)
    )
    return torch.zeros(count, 1, dtype=torch.float64), u, w


@pytest.mark.parametrize("min_det", [0.01, 0.2, 0.9])
def test_bounded_planar_keeps_the_determinant_above_its_bound(min_det):
    """det J = 1 + (1 - tanh^2(w^T z + b)) w^T u_hat. Where w^T u is very negative and w^T z + b = 0
    (tanh' = 1), Pyro's step has det J = softplus(w^T u), down to 1e-13 here; the bounded step's
    det J stays above min_det there and anywhere else."""
    torch.manual_seed(5)
    count, dim = 10, 6
    bias, u, w = _collapsing_planar_parameters(dim, count)
    on_plane = torch.randn(count, dim, dtype=torch.float64)
    on_plane = on_plane - (on_plane * w).sum(-1, keepdim=True) * w / w.pow(2).sum(-1, keepdim=True)
    z = torch.cat([on_plane, torch.randn(count, dim, dtype=torch.float64)])  # tanh' = 1, then any
    params = tuple(p.repeat(2, 1) for p in (bias, u, w))
    bounded = ConditionedBoundedPlanar(params, min_det)
    pyro_step = ConditionedPlanar(params)
    det = bounded.log_abs_det_jacobian(z, bounded(z)).exp()
    pyro_det = pyro_step.log_abs_det_jacobian(z, pyro_step(z)).exp()
    assert (det > min_det).all()
    assert torch.allclose(det[:count], min_det + F.softplus((u * w).sum(-1)), rtol=1e-12)
    assert pyro_det[:count].min() < 1e-12  # the unbounded step does collapse here
    assert torch.allclose(pyro_det[:count], F.softplus((u * w).sum(-1)), rtol=1e-9)
    # away from the collapse (w^T u >> 0) the bound changes the step by w^T u_hat += min_det only
    u_far = -u
    far = ConditionedBoundedPlanar((bias, u_far, w), min_det)
    assert torch.allclose(
        (far.u_hat(u_far, w) * w).sum(-1), min_det - 1 + F.softplus((u_far * w).sum(-1))
    )


@pytest.mark.parametrize("amortized", [False, True], ids=["static", "amortized"])
def test_bounded_planar_steps_start_at_the_identity_and_zero_is_pyros_step(amortized):
    torch.manual_seed(6)
    context = torch.randn(50, H).relu()
    terms = parse_flow_spec("planar:3").terms
    flow = EuclideanFlow(D, terms, H if amortized else None, planar_min_det=0.3)
    expected = ConditionalBoundedPlanar if amortized else BoundedPlanar
    assert all(type(step) is expected and step.min_det == 0.3 for step in flow.steps)
    x = torch.randn(50, D)
    for t in flow.transforms(context if amortized else None):
        assert isinstance(t, ConditionedBoundedPlanar if amortized else BoundedPlanar)
        y = t(x)
        tol = 0.05 if amortized else 1e-5
        assert (y - x).norm(dim=-1).max() < tol
        assert t.log_abs_det_jacobian(x, y).abs().max() < tol
        x = y
    _bias, u, w = identity_planar_parameters(D, 0.3)
    assert torch.allclose((u * w).sum(), torch.tensor(math.log(math.expm1(0.7))))
    assert torch.allclose(bounded_u_hat(u, w, 0.3), torch.zeros(D), atol=1e-6)
    pyro_steps = EuclideanFlow(D, terms, H if amortized else None).steps
    pyro_type = dist.transforms.ConditionalPlanar if amortized else dist.transforms.Planar
    assert all(type(step) is pyro_type for step in pyro_steps)


@pytest.mark.parametrize("min_det", [-0.1, 1.0, float("nan"), True])
def test_bad_planar_min_det_is_rejected(min_det):
    with pytest.raises(ValueError, match=r"planar_min_det must be a number in \[0, 1\)"):
        EuclideanFlow(D, parse_flow_spec("planar:1").terms, planar_min_det=min_det)
    with pytest.raises(ValueError, match="planar_min_det"):
        identity_planar_parameters(D, min_det)


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
        m,
        count,
        parse_flow_spec("householder:2+mobius:2+mobiusmix:2").terms,
        H if amortized else None,
        components=3,
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
    assert [type(t) for t in transforms] == [SphereHouseholder] + [MobiusTransform] * 2 + [
        MobiusMixture
    ] * 2


def _mixture_raw(m: int, components: int = 4, seed: int = 0) -> torch.Tensor:
    """Random mixture parameters, with strong dilations (scales from e^-3 to e^3)."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(m, generator=g, dtype=torch.float64)
    log_scale = torch.linspace(-3.0, 3.0, components, dtype=torch.float64)
    logits = torch.randn(components, generator=g, dtype=torch.float64)
    return torch.cat([axis, log_scale, logits])


@pytest.mark.parametrize("m", [2, 3, 5])
def test_mobius_mixture_inverse_and_logdet(m):
    torch.manual_seed(m)
    t = MobiusMixture(_mixture_raw(m, seed=m), m)
    axis = t.params()[0]
    # random points, and points next to (and on) both poles of the axis
    near = [s * axis + eps * _unit(m) for s in (1.0, -1.0) for eps in (0.0, 1e-8, 1e-3)]
    x = torch.cat([_unit(20, m), torch.nn.functional.normalize(torch.stack(near), dim=-1)])
    y = t(x)
    assert torch.allclose(y.norm(dim=-1), torch.ones(len(x), dtype=torch.float64))
    assert torch.allclose(t._inverse(y), x, atol=1e-10)
    logdet = t.log_abs_det_jacobian(x, y)
    assert logdet.shape == (len(x),)
    assert torch.isfinite(logdet).all()
    for i in [0, 1, 2, 3, 22, 25]:  # random points; 1e-8 and 1e-3 from the axis
        expected = _sphere_logdet(lambda v: t(v.unsqueeze(0)).squeeze(0), x[i])
        assert torch.allclose(logdet[i], expected, atol=1e-6), (i, logdet[i], expected)
    # on the poles the log-det is the limit: continuous with the points 1e-8 away
    assert torch.allclose(logdet[20], logdet[21], atol=1e-6)
    assert torch.allclose(logdet[23], logdet[24], atol=1e-6)


def test_mobius_mixture_special_cases_and_gradients():
    torch.manual_seed(8)
    m = 4
    x = _unit(6, m)
    # log-scales 0: the identity, whatever the axis and weights
    raw = torch.cat([torch.randn(m), torch.zeros(3), torch.randn(3)]).double()
    assert torch.allclose(MobiusMixture(raw, m)(x), x, atol=1e-12)
    # one component: the Möbius transformation with w = a * axis, scale (1 + a) / (1 - a)
    axis = _unit(m)
    mobius = MobiusTransform(0.7 * axis)
    a = (mobius.point() * axis).sum()
    single = MobiusMixture(
        torch.cat([axis, ((1 + a) / (1 - a)).log().reshape(1), a.new_zeros(1)]), m
    )
    assert torch.allclose(single(x), mobius(x), atol=1e-12)
    assert torch.allclose(
        single.log_abs_det_jacobian(x, single(x)), mobius.log_abs_det_jacobian(x, mobius(x))
    )
    # the numerical inverse is differentiable in the parameters and the point (implicit gradients)
    raw = _mixture_raw(3, components=3).requires_grad_()
    y = _unit(4, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, v: MobiusMixture(r, 3)._inverse(v), (raw, y))
    assert torch.autograd.gradcheck(lambda r, v: MobiusMixture(r, 3)._call(v), (raw, y))
    # float32: the inverse is accurate to rounding
    t32 = MobiusMixture(_mixture_raw(3).float(), 3)
    x32 = _unit(1000, 3).float()
    assert (t32._inverse(t32(x32)) - x32).abs().max() < 1e-5
    with pytest.raises(ValueError, match="m \\+ 2M"):
        MobiusMixture(torch.zeros(6), 3).params()


def _sphere_quadrature(q, n: int = 100) -> torch.Tensor:
    """Integral of ``q``'s density over S^2: midpoint rule in (cos(polar angle), azimuth), since the
    surface measure is d(cos theta) d phi (Archimedes)."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    phi = (torch.arange(2 * n, dtype=torch.float64) + 0.5) / (2 * n) * 2 * math.pi
    t, phi = torch.meshgrid(t, phi, indexing="ij")
    r = (1 - t**2).sqrt()
    grid = torch.stack([r * phi.cos(), r * phi.sin(), t], -1).reshape(-1, 3)
    return q.log_prob(grid).exp().sum() * (2 / n) * (math.pi / n)


@pytest.mark.parametrize("base_cls", [VonMisesFisher, PowerSpherical])
def test_mobius_mixture_density_normalized_on_s2(base_cls):
    """Two mixture steps and a Möbius step push a vMF / PS to a density that integrates to one."""
    torch.manual_seed(9)
    base = base_cls(_unit(3), torch.tensor(4.0, dtype=torch.float64))
    transforms = [
        MobiusMixture(_mixture_raw(3, seed=1), 3),
        MobiusTransform(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)),
        MobiusMixture(_mixture_raw(3, seed=2), 3),
    ]
    q = dist.TransformedDistribution(base, transforms)
    # the quadrature error is ~1e-6; dropping the (m - 2) log(sin g / sin theta) term gives 0.89
    assert abs(_sphere_quadrature(q).item() - 1.0) < 1e-4
    z = q.rsample((5,))
    assert torch.allclose(q.log_prob(z), q.log_prob(z.clone()), atol=1e-8)  # cached vs inverted


@pytest.mark.parametrize("base_cls", [VonMisesFisher, PowerSpherical])
def test_pushed_density_normalized_on_circle(base_cls):
    """On S^1, the pushed density integrates to one (so the log-det is right, globally)."""
    torch.manual_seed(6)
    base = base_cls(_unit(2).float(), torch.tensor(3.0))
    q = dist.TransformedDistribution(
        base,
        [
            MobiusTransform(torch.tensor([0.8, -0.5])),
            SphereHouseholder(torch.randn(2, 2)),
            MobiusMixture(_mixture_raw(2).float(), 2),
        ],
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

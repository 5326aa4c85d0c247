r"""The path-derivative ("sticking the landing") gradient of :math:`\log q(z)` at a reparameterised sample.

:func:`path_log_prob` returns :math:`\log q_\phi(z)` with its value unchanged but with the gradient
:math:`\nabla_z \log q_\phi(z) \cdot \mathrm{d}z / \mathrm{d}\phi` only: the score term
:math:`\nabla_\phi \log q_\phi(z)|_z`, whose expectation is zero, is dropped (Roeder, Wu & Duvenaud 2017).

For a flow :math:`z_K = T_K \circ \dots \circ T_1(z_0)`,

.. math::
    \nabla_{z_K} \log q_K(z_K)^\top = a^\top J_1^{-1} J_2^{-1} \cdots J_K^{-1},
    \qquad a = \nabla_{z_0}\Bigl[\log q_0(z_0) - \sum_k \log|\det J_k|\Bigr],

with :math:`J_k` the Jacobian of step :math:`k` at its input. :math:`a` comes from autograd (the partial
derivative through :math:`z_0` of the density already computed), and each :math:`v^\top J_k^{-1}` from
the step's structure: Sherman–Morrison for planar (:math:`J = I + h'\,\hat u w^\top`) and radial
(:math:`J = c I + s\, e e^\top`) steps, the reflection itself for Householder steps, one vector–Jacobian
product of the shift network for NICE couplings, a division for the diagonal scaling. Other
transforms fall back to the full Jacobian (:math:`d` batched backward passes) and a solve. No step is
inverted, so planar and radial flows, which have no closed-form inverse, are covered.

:func:`base_path_log_prob` drops the score of the base distribution's parameters only and keeps the
total gradient for the flow's. It is unbiased too: the score has zero mean for every parameter
separately, and at a fixed flow output :math:`z_K` the base's parameters enter :math:`\log q_K(z_K)`
only through :math:`\log q_0(z_0)`, :math:`z_0 = T^{-1}(z_K)`. So it drops
:math:`\partial \log q_0(z_0) / \partial(\text{base parameters})` at fixed :math:`z_0`, which needs
no Jacobian at all. The full path gradient multiplies the score by every step's :math:`J_k^{-1}`;
on trained planar flows rare draws meet a step that nearly collapses one direction, where
:math:`J_k^{-1}` stretches by hundreds, and that gives its gradient a heavy tail
(``docs/results.md``). The base-only version has no such factor, and it works for flows on spheres
too.
"""

from __future__ import annotations

import torch
from pyro.distributions import TransformedDistribution, constraints
from pyro.distributions.transforms.householder import ConditionedHouseholder
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.transforms.radial import ConditionedRadial
from torch import Tensor
from torch.distributions.utils import _sum_rightmost
from torch.nn import functional as F

from pyro_svae.flows.euclidean import AdditiveCoupling, DiagonalScaling, _with_context

__all__ = ["base_path_log_prob", "path_log_prob"]


def is_real_vector(support) -> bool:
    """Whether ``support`` is :math:`\\mathbb{R}^d` (``constraints.real_vector`` or an equivalent)."""
    return isinstance(support, constraints.independent) and (
        support.reinterpreted_batch_ndims == 1
        and isinstance(support.base_constraint, type(constraints.real))
    )


def _flow_points(fn, value: Tensor) -> list[Tensor] | None:
    """The points z_0, ..., z_K = ``value`` of the flow behind ``value``, from the transforms' caches;
    ``[value]`` without a flow, ``None`` when the cached chain does not end at ``value``."""
    if not isinstance(fn, TransformedDistribution) or not fn.transforms:
        return [value]
    cached = [getattr(t, "_cached_x_y", (None, None)) for t in fn.transforms]
    if cached[-1][1] is not value or any(x is None for x, _ in cached):
        return None
    if any(cached[k][1] is not cached[k + 1][0] for k in range(len(cached) - 1)):
        return None
    return [x for x, _ in cached] + [value]


def _params(transform):
    params = transform._params
    return params() if callable(params) else params


def planar_jacobian_factors(t: ConditionedPlanar, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)`` with the planar step's Jacobian ``J = I + a b^T`` at its inputs ``x``, so that
    ``det J = 1 + b^T a`` (Pyro's constraint on ``a = û`` keeps it >= 0)."""
    bias, u, w = _params(t)
    act = torch.tanh((w * x).sum(-1, keepdim=True) + bias)
    return t.u_hat(u, w), (1 - act.pow(2)) * w


def _planar(t: ConditionedPlanar, x: Tensor, v: Tensor) -> Tensor:
    a, b = planar_jacobian_factors(t, x)
    return v - (v * a).sum(-1, keepdim=True) * b / (1 + (b * a).sum(-1, keepdim=True))


def _radial(t: ConditionedRadial, x: Tensor, v: Tensor) -> Tensor:
    x0, alpha_prime, beta_prime = _params(t)
    alpha = F.softplus(alpha_prime)
    beta = -alpha + F.softplus(beta_prime)
    diff = x - x0
    r = diff.norm(dim=-1, keepdim=True)
    h = (alpha + r).reciprocal()
    c, s = 1 + beta * h, -beta * h.pow(2) * r  # J = c I + s e e^T, e = diff / r
    e = diff / r.clamp_min(torch.finfo(r.dtype).tiny)
    return (v - s * (v * e).sum(-1, keepdim=True) * e / (c + s)) / c


def _coupling(t: AdditiveCoupling, x: Tensor, v: Tensor) -> Tensor:
    cond, _ = t._halves(x)
    v_cond, v_moved = t._halves(v)
    with torch.enable_grad():
        leaf = cond.detach().requires_grad_()
        context = None if t.context is None else t.context.detach()
        shift = t.net(_with_context(leaf, context))
        (pullback,) = torch.autograd.grad(shift, leaf, v_moved)
    return t._join(v_cond - pullback, v_moved)  # v^T [[I, 0], [-dt/dcond, I]]


def _generic(t, x: Tensor, v: Tensor) -> Tensor:
    with torch.enable_grad():
        leaf = x.detach().requires_grad_()
        y = t._call(leaf)
        d = x.shape[-1]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        cotangents = eye.reshape(d, *(1,) * (y.dim() - 1), d).expand(d, *y.shape)
        (rows,) = torch.autograd.grad(y, leaf, grad_outputs=cotangents, is_grads_batched=True)
    jacobian = rows.movedim(0, -2)  # [..., i, j] = d y_i / d x_j
    return torch.linalg.solve(jacobian.mT, v.unsqueeze(-1)).squeeze(-1)


def _inverse_jacobian_product(t, x: Tensor, v: Tensor) -> Tensor:
    """:math:`v^\\top J^{-1}` for the step ``t`` at its input ``x``."""
    if isinstance(t, ConditionedPlanar):
        return _planar(t, x, v)
    if isinstance(t, ConditionedRadial):
        return _radial(t, x, v)
    if isinstance(t, ConditionedHouseholder):
        return t._call(v)  # J is orthogonal and symmetric per reflection: v^T J^-1 = (J v)^T
    if isinstance(t, AdditiveCoupling):
        return _coupling(t, x, v)
    if isinstance(t, DiagonalScaling):
        return v * (-t.log_scale()).exp()
    return _generic(t, x, v)


def _with_path_gradient(log_q: Tensor, grad: Tensor, value: Tensor, event_dims: int) -> Tensor:
    """``log_q``'s value, with the gradient of ``grad . value`` (summed over the event dims)."""
    path = grad.detach() * value
    if event_dims:
        path = path.flatten(value.dim() - event_dims).sum(-1)
    return log_q.detach() + (path - path.detach())


def path_log_prob(fn, value: Tensor) -> Tensor:
    """``fn.log_prob(value)``, with the path-derivative gradient where it applies.

    It applies when ``value`` was drawn with ``rsample`` in the current autograd graph and either
    ``fn`` has no flow and a ``log_prob`` differentiable in its argument (Gaussians; the vMF and the
    Power Spherical, where :math:`z` moves on the sphere, so only the tangent part of
    :math:`\\nabla_z \\log q` acts), or ``fn`` is a flow on :math:`\\mathbb{R}^d` whose transforms
    cached their points. Elsewhere (e.g. a flow on a sphere) the plain ``log_prob`` is returned.
    """
    log_q = fn.log_prob(value)
    if not (torch.is_grad_enabled() and value.requires_grad and log_q.requires_grad):
        return log_q
    transforms = fn.transforms if isinstance(fn, TransformedDistribution) else []
    if transforms and (fn.event_dim != 1 or not is_real_vector(fn.support)):
        return log_q
    points = _flow_points(fn, value)
    if points is None or points[0].shape != value.shape or not points[0].requires_grad:
        return log_q
    # a = d log q / d z0 with the parameters fixed: the partial derivative through z0 (z0 = value
    # without a flow; with one, log q = log q0(z0) - sum log|det J| from the cached forward pass)
    (grad,) = torch.autograd.grad(log_q.sum(), points[0], retain_graph=True, allow_unused=True)
    if grad is None:  # log_prob not differentiable in its argument
        return log_q
    with torch.no_grad():
        for t, x in zip(transforms, points, strict=False):
            grad = _inverse_jacobian_product(t, x.detach(), grad)
    return _with_path_gradient(log_q, grad, value, fn.event_dim)


def base_path_log_prob(fn, value: Tensor) -> Tensor:
    r"""``fn.log_prob(value)``, without the score of the base distribution's parameters.

    For a :class:`~pyro.distributions.TransformedDistribution` whose ``value`` was drawn with
    ``rsample`` in the current autograd graph, the gradient is the total gradient minus
    :math:`\partial \log q_0(z_0) / \partial(\text{base parameters})` at fixed :math:`z_0` (the
    flow's parameters keep their total gradient). Without a flow this is :func:`path_log_prob`.
    Where the flow's points are not cached, the plain ``log_prob`` is returned.
    """
    transforms = fn.transforms if isinstance(fn, TransformedDistribution) else []
    if not transforms:
        return path_log_prob(fn, value)
    log_q = fn.log_prob(value)
    if not (torch.is_grad_enabled() and log_q.requires_grad):
        return log_q
    points = _flow_points(fn, value)
    if points is None:
        return log_q
    base_event_dims = fn.event_dim - len(fn.base_dist.event_shape)
    score = _sum_rightmost(fn.base_dist.log_prob(points[0].detach()), base_event_dims)
    return log_q - (score - score.detach())

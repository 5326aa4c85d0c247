r"""Flows on :math:`\mathbb{R}^d` for Gaussian posterior groups, static or amortized.

Planar, radial and Householder steps are Pyro's (:class:`~pyro.distributions.transforms.Planar`,
:class:`~pyro.distributions.transforms.Radial`, :class:`~pyro.distributions.transforms.Householder` and
their ``Conditional*`` versions); only NICE (Dinh et al. 2015) is written here: volume-preserving additive
coupling layers :class:`AdditiveCoupling` over alternating halves, closed by a diagonal
:class:`DiagonalScaling` (log-determinant :math:`\sum_i s_i` for a scale :math:`e^{s}`).

Amortized parameters come from the encoder features ``h`` through a :class:`LinearHypernet`; the
transforms broadcast them against extra leading batch dims of the input (e.g. importance particles).

Steps other than Householder's start at or near the identity, except static radial steps, which keep
Pyro's random initialisation. Planar needs care: Pyro's invertibility constraint
:math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \lVert w\rVert^2` with
:math:`m(a) = -1 + \log(1 + e^a)` makes near-zero :math:`u, w` a contraction by :math:`1 + m(0) = \log 2`
along a random direction (log-det :math:`-0.37` a step) with :math:`\lVert\hat u\rVert \propto
1/\lVert w\rVert`, ill-conditioned (at exactly :math:`w = 0` it is undefined).
:func:`identity_planar_parameters` instead gives each step a unit random :math:`w_0`, :math:`b_0 = 0`
and :math:`u_0 = \log(e - 1)\, w_0`, for which :math:`m(w_0^\top u_0) = 0`, so :math:`\hat u = 0`
exactly (static) or nearly (amortized, small hypernet weights).

Pyro's constraint keeps :math:`\det J = 1 + (1 - \tanh^2(w^\top z + b))\, w^\top \hat u` positive
but not away from 0: a trained step can nearly collapse a direction, where :math:`\log\det J` and
its gradients are unbounded. ``planar_min_det=δ`` (:class:`BoundedPlanar`) shifts :math:`m` to
:math:`m_\delta(a) = -1 + \delta + \log(1 + e^a)`, so that :math:`w^\top \hat u > -1 + \delta` and
:math:`\det J > \delta` at every input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms.planar import ConditionedPlanar
from torch import Tensor, nn
from torch.distributions import Transform
from torch.nn import functional as F

__all__ = [
    "AdditiveCoupling",
    "BoundedPlanar",
    "ConditionalBoundedPlanar",
    "ConditionedBoundedPlanar",
    "CouplingNet",
    "DiagonalScaling",
    "EuclideanFlow",
    "LinearHypernet",
    "bounded_u_hat",
    "identity_planar_parameters",
]


class LinearHypernet(nn.Module):
    """``h (..., H) -> (p_1, ..., p_k)``: one linear layer split into tensors of sizes ``param_dims``.

    Weights and biases start at ``init_scale`` times their default scale (near zero by default), so the
    outputs start near the biases; planar steps then set the biases to
    :func:`identity_planar_parameters`.
    """

    def __init__(self, in_features: int, param_dims: Sequence[int], init_scale: float = 1e-2):
        super().__init__()
        self.param_dims = tuple(int(p) for p in param_dims)
        self.linear = nn.Linear(in_features, sum(self.param_dims))
        with torch.no_grad():
            self.linear.weight.mul_(init_scale)
            self.linear.bias.normal_(0.0, init_scale)

    def forward(self, h: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.linear(h).split(self.param_dims, dim=-1))


def identity_planar_parameters(dim: int, min_det: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    r"""Planar parameters ``(b, u, w)`` of shapes ``(1,), (dim,), (dim,)`` at which the step is the identity.

    Pyro's planar step :math:`z + \hat u \tanh(w^\top z + b)` uses
    :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \lVert w\rVert^2`, :math:`m(a) = -1 + \log(1 + e^a)`,
    so near-zero :math:`u, w` are not the identity but a contraction by a factor :math:`\log 2 \approx 0.69`
    along :math:`w`. Here :math:`w` is a random unit vector (from torch's global generator),
    :math:`b = 0` and :math:`u = \log(e - 1)\, w`: then :math:`m(w^\top u) = 0`, so :math:`\hat u = 0`, while
    :math:`\lVert w\rVert = 1` keeps :math:`\hat u` well conditioned as training moves away. With
    ``min_det=δ`` (:class:`BoundedPlanar`), :math:`u = \log(e^{1-\delta} - 1)\, w`, for which
    :math:`m_\delta(w^\top u) = 0`.
    """
    _check_min_det(min_det)
    w = torch.randn(dim)
    w = w / w.norm()
    return torch.zeros(1), math.log(math.expm1(1.0 - min_det)) * w, w


def _check_min_det(min_det: float) -> None:
    if isinstance(min_det, bool) or not (isinstance(min_det, int | float) and 0.0 <= min_det < 1.0):
        raise ValueError(f"planar_min_det must be a number in [0, 1), got {min_det!r}")


def bounded_u_hat(u: Tensor, w: Tensor, min_det: float) -> Tensor:
    r""":math:`\hat u = u + (m_\delta(w^\top u) - w^\top u)\, w / \lVert w\rVert^2` with
    :math:`m_\delta(a) = -1 + \delta + \log(1 + e^a)`, so :math:`w^\top \hat u = m_\delta(w^\top u) > -1 + \delta`
    (``δ = min_det``; Pyro's :math:`\hat u` is ``δ = 0``)."""
    alpha = (u * w).sum(-1, keepdim=True)
    shift = min_det - 1.0 + F.softplus(alpha) - alpha
    return u + shift * w / w.pow(2).sum(-1, keepdim=True)


class _BoundedUHat:
    """:meth:`u_hat` of a planar step with the determinant bound ``min_det`` (see :func:`bounded_u_hat`)."""

    def _set_min_det(self, min_det: float) -> None:
        _check_min_det(min_det)
        self.min_det = float(min_det)

    def u_hat(self, u: Tensor, w: Tensor) -> Tensor:
        return bounded_u_hat(u, w, self.min_det)


class ConditionedBoundedPlanar(_BoundedUHat, ConditionedPlanar):
    r"""Pyro's planar step with :math:`\det J > \delta` (``min_det``): :math:`\hat u` from
    :func:`bounded_u_hat`. ``params`` as for :class:`~pyro.distributions.transforms.ConditionedPlanar`."""

    def __init__(self, params, min_det: float) -> None:
        super().__init__(params)
        self._set_min_det(min_det)


class BoundedPlanar(_BoundedUHat, T.Planar):
    r"""Static planar step :math:`z + \hat u \tanh(w^\top z + b)` with :math:`\det J > \delta`
    (``min_det``) at every input; Pyro's :class:`~pyro.distributions.transforms.Planar` is
    ``min_det=0``, where the determinant can come arbitrarily close to 0."""

    def __init__(self, input_dim: int, min_det: float) -> None:
        super().__init__(input_dim)
        self._set_min_det(min_det)


class ConditionalBoundedPlanar(T.ConditionalPlanar):
    r"""Amortized :class:`BoundedPlanar`: ``nn(context)`` gives ``(b, u, w)``, and
    :meth:`condition` returns a :class:`ConditionedBoundedPlanar`."""

    def __init__(self, nn: Callable, min_det: float) -> None:
        super().__init__(nn)
        _check_min_det(min_det)
        self.min_det = float(min_det)

    def condition(self, context: Tensor) -> ConditionedBoundedPlanar:
        return ConditionedBoundedPlanar(partial(self._params, context), self.min_det)


def _planar_step(dim: int, context_dim: int | None, min_det: float) -> nn.Module:
    """A planar step at the identity: Pyro's (``min_det=0``) or a bounded one."""
    bias, u, w = identity_planar_parameters(dim, min_det)
    if context_dim is None:
        step = T.Planar(dim) if min_det == 0 else BoundedPlanar(dim, min_det)
        with torch.no_grad():
            step.bias.copy_(bias)
            step.u.copy_(u)
            step.w.copy_(w)
        return step
    hypernet = LinearHypernet(context_dim, [1, dim, dim])
    with torch.no_grad():
        hypernet.linear.bias.copy_(torch.cat([bias, u, w]))
    return (
        T.ConditionalPlanar(hypernet)
        if min_det == 0
        else ConditionalBoundedPlanar(hypernet, min_det)
    )


class CouplingNet(nn.Module):
    """The shift network of a coupling layer: ``(x_a[, h]) -> t``, an MLP with zero-initialised output."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _with_context(x: Tensor, context: Tensor | None) -> Tensor:
    if context is None:
        return x
    batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    return torch.cat(
        [x.expand(*batch, x.shape[-1]), context.expand(*batch, context.shape[-1])], dim=-1
    )


class AdditiveCoupling(Transform):
    r"""NICE's additive coupling :math:`y_a = x_a,\; y_b = x_b + t(x_a[, h])` (log-det 0).

    :param int split_dim: size of the first half :math:`x_a = x_{:split}`.
    :param net: the shift network, called on :math:`x_a` (with the context ``h`` appended if given).
    :param bool flip: swap the roles of the halves (:math:`x_b` conditions, :math:`x_a` is shifted).
    :param context: encoder features for an amortized flow, broadcast against ``x``'s batch dims.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    volume_preserving = True

    def __init__(
        self,
        split_dim: int,
        net: Callable[[Tensor], Tensor],
        flip: bool = False,
        context: Tensor | None = None,
    ) -> None:
        super().__init__(cache_size=1)
        self.split_dim = int(split_dim)
        self.net = net
        self.flip = bool(flip)
        self.context = context

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[..., : self.split_dim], x[..., self.split_dim :]
        return (b, a) if self.flip else (a, b)

    def _join(self, cond: Tensor, moved: Tensor) -> Tensor:
        batch = torch.broadcast_shapes(cond.shape[:-1], moved.shape[:-1])
        cond, moved = cond.expand(*batch, cond.shape[-1]), moved.expand(*batch, moved.shape[-1])
        return torch.cat([moved, cond] if self.flip else [cond, moved], dim=-1)

    def _call(self, x: Tensor) -> Tensor:
        cond, moved = self._halves(x)
        return self._join(cond, moved + self.net(_with_context(cond, self.context)))

    def _inverse(self, y: Tensor) -> Tensor:
        cond, moved = self._halves(y)
        return self._join(cond, moved - self.net(_with_context(cond, self.context)))

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        batch = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        return x.new_zeros(batch)


class DiagonalScaling(Transform):
    r"""NICE's final scaling :math:`y = e^{s} \odot x`, log-det :math:`\sum_i s_i`.

    :param log_scale: :math:`s`, shape ``(d,)`` (static) or ``batch + (d,)`` (amortized), or a callable
        returning it.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, log_scale: Tensor | Callable[[], Tensor]) -> None:
        super().__init__(cache_size=1)
        self._log_scale = log_scale

    def log_scale(self) -> Tensor:
        return self._log_scale() if callable(self._log_scale) else self._log_scale

    def _call(self, x: Tensor) -> Tensor:
        return x * self.log_scale().exp()

    def _inverse(self, y: Tensor) -> Tensor:
        return y * (-self.log_scale()).exp()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        s = self.log_scale().sum(-1)
        return s.expand(torch.broadcast_shapes(s.shape, x.shape[:-1]))


class _StaticScaling(DiagonalScaling, TransformModule):
    def __init__(self, dim: int) -> None:
        TransformModule.__init__(self)
        DiagonalScaling.__init__(self, lambda: self.log_scale_param)
        self.log_scale_param = nn.Parameter(torch.zeros(dim))


class EuclideanFlow(nn.Module):
    r"""The flow steps of one Gaussian group of dimension ``dim``, for a list of flow terms.

    :param int dim: dimension :math:`d` of the group.
    :param terms: :class:`~pyro_svae.flows.spec.FlowTerm` s (their Euclidean kinds).
    :param int context_dim: width of the encoder features for an amortized flow, ``None`` for static.
    :param int coupling_hidden: hidden width of the NICE shift networks.
    :param float planar_min_det: lower bound δ in [0, 1) on each planar step's Jacobian determinant
        (0: Pyro's planar step, whose determinant is only kept positive; see :class:`BoundedPlanar`).

    :meth:`transforms` returns the list of :class:`torch.distributions.Transform` to push the base
    posterior through, conditioned on the encoder features ``h`` when amortized.
    """

    def __init__(
        self,
        dim: int,
        terms: Sequence,
        context_dim: int | None = None,
        coupling_hidden: int = 64,
        planar_min_det: float = 0.0,
    ) -> None:
        super().__init__()
        _check_min_det(planar_min_det)
        self.dim = int(dim)
        self.planar_min_det = float(planar_min_det)
        self.amortized = context_dim is not None
        self.kinds: list[str] = []
        self.flips: list[bool] = []
        self.steps = nn.ModuleList()
        for term in terms:
            if not term.euclidean:
                raise ValueError(f"the flow kind {term.kind!r} does not apply to R^{dim}")
            if term.kind == "nice" and self.dim < 2:
                raise ValueError("a NICE flow needs a Gaussian group of dimension >= 2")
            for step in range(term.steps):
                self.kinds.append(term.kind)
                self.flips.append(step % 2 == 1)
                self.steps.append(self._make(term.kind, step, context_dim, coupling_hidden))
            if term.kind == "nice":  # the final diagonal scaling of NICE
                self.kinds.append("scaling")
                self.flips.append(False)
                self.steps.append(
                    _StaticScaling(self.dim)
                    if context_dim is None
                    else LinearHypernet(context_dim, [self.dim])
                )

    def _make(self, kind: str, step: int, context_dim: int | None, hidden: int) -> nn.Module:
        d = self.dim
        if kind == "nice":
            split = d // 2
            cond, moved = (split, d - split) if step % 2 == 0 else (d - split, split)
            return CouplingNet(cond + (context_dim or 0), moved, hidden)
        if kind == "planar":
            return _planar_step(d, context_dim, self.planar_min_det)
        if context_dim is None:
            if kind == "radial":
                return T.Radial(d)
            return T.Householder(d, count_transforms=1)
        if kind == "radial":
            return T.ConditionalRadial(LinearHypernet(context_dim, [d, 1, 1]))
        # the hypernet returns a 1-tuple; ConditionalHouseholder wants the tensor itself
        return T.ConditionalHouseholder(d, _First(LinearHypernet(context_dim, [d], 1.0)), 1)

    def transforms(self, context: Tensor | None = None) -> list[Transform]:
        """The flow's transforms, conditioned on ``context`` (the encoder features) when amortized."""
        if self.amortized and context is None:
            raise ValueError("an amortized flow needs the encoder features as context")
        out: list[Transform] = []
        for kind, flip, step in zip(self.kinds, self.flips, self.steps, strict=True):
            if kind == "nice":
                split = self.dim // 2
                out.append(AdditiveCoupling(split, step, flip, context if self.amortized else None))
            elif kind == "scaling":
                out.append(step if not self.amortized else DiagonalScaling(step(context)[0]))
            elif self.amortized:
                out.append(step.condition(context))
            else:
                out.append(step)
        return out


class _First(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)[0]

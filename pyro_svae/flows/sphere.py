r"""Flows on spheres :math:`S^{m-1} \subset \mathbb{R}^m`, to push a vMF, Power Spherical or uniform factor.

* :class:`SphereHouseholder`: Householder reflections :math:`z \mapsto (I - 2uu^\top/\|u\|^2) z`, exact
  isometries of the sphere, so the log-determinant is 0 and a pushed vMF stays a vMF (with a reflected
  mean direction); useful composed with the expressive steps below.
* :class:`MobiusTransform`: the Möbius transformation of Rezende et al. (2020),

  .. math:: f_w(z) = \frac{1 - \|w\|^2}{\|z - w\|^2}(z - w) - w, \qquad \|w\| < 1,

  a conformal diffeomorphism of :math:`S^{m-1}` with inverse :math:`f_{-w}` and log-determinant (with
  respect to the sphere's surface measure) :math:`(m-1) \log\bigl((1 - \|w\|^2)/\|z - w\|^2\bigr)`.
  It concentrates mass away from :math:`w/\|w\|`, making a pushed vMF skewed (not rotationally symmetric).

Both are :class:`torch.distributions.Transform` with ``domain = codomain = constraints.sphere``, so
``TransformedDistribution(VonMisesFisher(loc, kappa), [MobiusTransform(w)])`` has support the sphere
and a ``log_prob`` of shape ``batch_shape``. Outputs are renormalised to unit norm (a no-op up to
rounding) so that they pass the support check.

Reference: D. J. Rezende, G. Papamakarios, S. Racanière, M. S. Albergo, G. Kanwar, P. E. Shanahan,
K. Cranmer (2020), "Normalizing Flows on Tori and Spheres", ICML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.transforms.householder import ConditionedHouseholder
from torch import Tensor, nn
from torch.distributions import Transform

from pyro_svae.ops import safe_normalize

__all__ = [
    "MAX_MOBIUS_RADIUS",
    "MobiusTransform",
    "SphereFlow",
    "SphereHouseholder",
    "mobius_point",
]


#: the Möbius points stay in the ball of this radius: the log-determinant is then bounded by
#: :math:`(m-1) \log\bigl((1 + r)/(1 - r)\bigr)`, about :math:`5.3 (m-1)`
MAX_MOBIUS_RADIUS = 0.99


def mobius_point(raw: Tensor) -> Tensor:
    r"""Map unconstrained ``raw (..., m)`` into the open unit ball,
    :math:`w = \rho\, r / \sqrt{1 + \|r\|^2}` with :math:`\rho` = :data:`MAX_MOBIUS_RADIUS`."""
    return MAX_MOBIUS_RADIUS * raw * torch.rsqrt(1.0 + raw.pow(2).sum(-1, keepdim=True))


class SphereHouseholder(ConditionedHouseholder):
    """Pyro's Householder reflections, as a transform of the sphere (log-determinant 0).

    :param u_unnormed: reflection normals, shape ``batch + (count, m)``, or a callable returning them.
    """

    domain = constraints.sphere
    codomain = constraints.sphere

    def _call(self, x: Tensor) -> Tensor:
        return safe_normalize(super()._call(x))

    def _inverse(self, y: Tensor) -> Tensor:
        return safe_normalize(super()._inverse(y))

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(torch.broadcast_shapes(x.shape[:-1], y.shape[:-1]))


class MobiusTransform(Transform):
    r"""The Möbius transformation :math:`f_w` of :math:`S^{m-1}` (see the module docs).

    :param raw: unconstrained parameter ``batch + (m,)`` (or a callable returning it), mapped into the
        unit ball by :func:`mobius_point`; ``raw = 0`` is the identity.
    """

    domain = constraints.sphere
    codomain = constraints.sphere
    bijective = True

    def __init__(self, raw: Tensor | Callable[[], Tensor]) -> None:
        super().__init__(cache_size=1)
        self._raw = raw

    def point(self) -> Tensor:
        """:math:`w`, inside the unit ball."""
        return mobius_point(self._raw() if callable(self._raw) else self._raw)

    @staticmethod
    def _apply(z: Tensor, w: Tensor) -> Tensor:
        diff = z - w
        ratio = (1.0 - w.pow(2).sum(-1, keepdim=True)) / diff.pow(2).sum(-1, keepdim=True)
        return safe_normalize(ratio * diff - w)

    def _call(self, x: Tensor) -> Tensor:
        return self._apply(x, self.point())

    def _inverse(self, y: Tensor) -> Tensor:
        return self._apply(y, -self.point())

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        w = self.point()
        ratio = (1.0 - w.pow(2).sum(-1)) / (x - w).pow(2).sum(-1)
        return (x.shape[-1] - 1) * torch.log(ratio)


class SphereFlow(nn.Module):
    r"""The flow steps of one sphere group of ``count`` factors :math:`S^{m-1}`, for a list of flow terms.

    Static parameters are per factor, shape ``(count, 1, ...)`` (``count > 1``, matching the factor plate
    at ``dim=-2``) or unbatched; amortized ones come from the encoder features ``h (N, H)`` through one
    linear layer per step, reshaped to ``(count, N, ...)`` or ``(N, ...)`` like the posterior's ``loc``.
    Both start at the identity (Möbius ``w = 0``; Householder normals random, as in Pyro).

    :param int ambient_dim: :math:`m`.
    :param int count: number of factors of the group.
    :param terms: :class:`~pyro_svae.flows.spec.FlowTerm` s (their sphere kinds).
    :param int context_dim: width of the encoder features for an amortized flow, ``None`` for static.
    """

    def __init__(
        self,
        ambient_dim: int,
        count: int,
        terms: Sequence,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.m, self.count = int(ambient_dim), int(count)
        self.amortized = context_dim is not None
        self.kinds: list[str] = []
        self.params = nn.ParameterList()
        self.nets = nn.ModuleList()
        for term in terms:
            if not term.spherical:
                raise ValueError(
                    f"the flow kind {term.kind!r} does not apply to spheres "
                    f"(sphere flows: householder, mobius)"
                )
            # Householder: all the reflections of a term in one step, as Pyro's Householder
            shapes = (
                [(term.steps, self.m)] if term.kind == "householder" else [(self.m,)] * term.steps
            )
            for shape in shapes:
                self.kinds.append(term.kind)
                size = int(torch.Size(shape).numel())
                if self.amortized:
                    net = nn.Linear(context_dim, self.count * size)
                    with torch.no_grad():
                        if term.kind == "mobius":
                            net.weight.mul_(1e-2)
                            net.bias.zero_()
                        else:
                            net.bias.normal_()
                    self.nets.append(net)
                else:
                    lead = (self.count, 1) if self.count > 1 else ()
                    init = (
                        torch.zeros(*lead, *shape)
                        if term.kind == "mobius"
                        else torch.randn(*lead, *shape)
                    )
                    self.params.append(nn.Parameter(init))
                    self.nets.append(nn.Identity())  # keeps kinds/params/nets aligned
        self._shapes = [
            (t.steps, self.m) if t.kind == "householder" else (self.m,)
            for t in terms
            for _ in range(1 if t.kind == "householder" else t.steps)
        ]

    def _param(self, index: int, context: Tensor | None) -> Tensor:
        if not self.amortized:
            return self.params[index]
        shape = self._shapes[index]
        out = self.nets[index](context)  # (N, count * size)
        out = out.reshape(*context.shape[:-1], self.count, *shape)
        if self.count > 1:
            return out.movedim(-1 - len(shape), 0)  # (count, N, *shape)
        return out.squeeze(-1 - len(shape))

    def transforms(self, context: Tensor | None = None) -> list[Transform]:
        """The flow's transforms, conditioned on ``context`` (the encoder features) when amortized."""
        if self.amortized and context is None:
            raise ValueError("an amortized flow needs the encoder features as context")
        out: list[Transform] = []
        for index, kind in enumerate(self.kinds):
            param = self._param(index, context)
            out.append(
                SphereHouseholder(param) if kind == "householder" else MobiusTransform(param)
            )
        return out

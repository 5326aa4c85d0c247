r"""Flows on spheres :math:`S^{m-1} \subset \mathbb{R}^m`, to push a vMF, Power Spherical or uniform factor.

* :class:`SphereHouseholder`: Householder reflections :math:`z \mapsto (I - 2uu^\top/\|u\|^2) z`, exact
  isometries of the sphere, so the log-determinant is 0 and a pushed vMF stays a vMF (with a reflected
  mean direction); useful composed with the expressive steps below.
* :class:`MobiusTransform`: the Möbius transformation of Rezende et al. (2020),

  .. math:: f_w(z) = \frac{1 - \|w\|^2}{\|z - w\|^2}(z - w) - w, \qquad \|w\| < 1,

  a conformal diffeomorphism of :math:`S^{m-1}` with inverse :math:`f_{-w}` and log-determinant (with
  respect to the sphere's surface measure) :math:`(m-1) \log\bigl((1 - \|w\|^2)/\|z - w\|^2\bigr)`.
  It concentrates mass away from :math:`w/\|w\|`, making a pushed vMF skewed (not rotationally symmetric).
* :class:`MobiusMixture`: moves the polar angle :math:`\theta` about a learned axis :math:`\mu` by a convex
  combination :math:`g(\theta) = \sum_k \rho_k\, 2\arctan(\lambda_k \tan\frac\theta2)` of the angle maps
  of the Möbius transformations with :math:`w \parallel \mu` (the circle construction of Rezende et al.
  applied to the polar angle, so valid on every :math:`S^{m-1}`), log-determinant
  :math:`\log g'(\theta) + (m-2)\log(\sin g(\theta)/\sin\theta)`; an expressive, stackable step whose
  inverse is found by bisection.

All are :class:`torch.distributions.Transform` with ``domain = codomain = constraints.sphere``, so
``TransformedDistribution(VonMisesFisher(loc, kappa), [MobiusTransform(w)])`` has support the sphere
and a ``log_prob`` of shape ``batch_shape``. Outputs are renormalised to unit norm (a no-op up to
rounding) so that they pass the support check.

Reference: D. J. Rezende, G. Papamakarios, S. Racanière, M. S. Albergo, G. Kanwar, P. E. Shanahan,
K. Cranmer (2020), "Normalizing Flows on Tori and Spheres", ICML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.transforms.householder import ConditionedHouseholder
from torch import Tensor, nn
from torch.distributions import Transform

from pyro_svae.ops import safe_normalize

__all__ = [
    "DEFAULT_MIXTURE_COMPONENTS",
    "MAX_MOBIUS_RADIUS",
    "MobiusMixture",
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


#: number of Möbius dilations mixed in one :class:`MobiusMixture` step by default
DEFAULT_MIXTURE_COMPONENTS = 4


#: the log-scales of a :class:`MobiusMixture` are used as given up to this magnitude, bounded beyond
MIXTURE_LOG_SCALE_KNEE = 4.0
#: bound on the log-scales of a :class:`MobiusMixture`: that of the Möbius steps,
#: :math:`\log\bigl((1 + r)/(1 - r)\bigr) \approx 5.29` with :math:`r` = :data:`MAX_MOBIUS_RADIUS`
MAX_MIXTURE_LOG_SCALE = math.log((1.0 + MAX_MOBIUS_RADIUS) / (1.0 - MAX_MOBIUS_RADIUS))


def _bound_log_scale(raw: Tensor) -> Tensor:
    r"""The identity on :math:`[-a, a]`, continued (:math:`C^2`) by :math:`\pm\bigl(a + (b - a)
    \tanh\frac{|x| - a}{b - a}\bigr)` into :math:`(-b, b)`; :math:`a` = :data:`MIXTURE_LOG_SCALE_KNEE`,
    :math:`b` = :data:`MAX_MIXTURE_LOG_SCALE`."""
    width = MAX_MIXTURE_LOG_SCALE - MIXTURE_LOG_SCALE_KNEE
    core = raw.clamp(-MIXTURE_LOG_SCALE_KNEE, MIXTURE_LOG_SCALE_KNEE)
    return core + width * torch.tanh((raw - core) / width)


def _sinc(x: Tensor) -> Tensor:
    r""":math:`\sin x / x` for :math:`x \ge 0`, with accurate value and gradient: its Taylor series
    (truncation :math:`x^{10}/11! < 10^{-17}`) below :math:`0.1`, where the gradient of the quotient
    cancels."""
    small = x < 0.1
    safe = torch.where(small, torch.ones_like(x), x)
    x2 = x * x
    series = 1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0)))
    return torch.where(small, series, torch.sin(safe) / safe)


def _dilation_angle(theta: Tensor, log_scale: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    r"""The angle map :math:`g(\theta) = \sum_k \rho_k\, 2\,\mathrm{atan2}(\lambda_k \sin\frac\theta2,
    \cos\frac\theta2)` of :class:`MobiusMixture` and its derivative, for ``theta (...)`` in
    :math:`[0, \pi]` and ``log_scale``, ``weights (..., M)``."""
    half = 0.5 * theta.unsqueeze(-1)
    cos_h, sin_h = torch.cos(half), torch.sin(half)
    scale = log_scale.exp()
    angle = (weights * 2.0 * torch.atan2(scale * sin_h, cos_h)).sum(-1)
    slope = (weights * scale / (cos_h.pow(2) + scale.pow(2) * sin_h.pow(2))).sum(-1)
    return angle, slope


def _half_angle_map(
    sin_h: Tensor, cos_h: Tensor, log_scale: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The angle map of :class:`MobiusMixture` from the half-angle :math:`(s, c) = (\sin\frac\theta2,
    \cos\frac\theta2)` (``(...)``; ``log_scale``, ``weights (..., M)``): :math:`g/2`, :math:`(\pi - g)/2`,
    :math:`g'` and :math:`\sin g / \sin\theta`,

    .. math:: \frac g2 = \sum_k \rho_k \alpha_k, \quad \frac{\pi - g}2 = \sum_k \rho_k\,
        \mathrm{atan2}(c, \lambda_k s), \quad g' = \sum_k \frac{\rho_k \lambda_k}{d_k^2}, \quad
        \frac{\sin g}{\sin\theta} = \mathrm{sinc}\frac g2 \sum_k \frac{\rho_k \lambda_k}
        {\mathrm{sinc}(\alpha_k)\, d_k} \cdot \frac{\cos(g/2)}{c},

    :math:`\alpha_k = \mathrm{atan2}(\lambda_k s, c)`, :math:`d_k = \sqrt{c^2 + \lambda_k^2 s^2}` (from
    :math:`\sin\alpha_k = \lambda_k s / d_k`): sums and products of positive terms, accurate relative to
    themselves, in value and gradient, for :math:`\theta \le \pi/2` (:math:`c \ge 1/\sqrt2`), and the last
    is :math:`g'(0)` at :math:`\theta = 0`."""
    cos_h = cos_h.unsqueeze(-1)
    scale = log_scale.exp()
    scaled = scale * sin_h.unsqueeze(-1)
    alpha = torch.atan2(scaled, cos_h)
    half = (weights * alpha).sum(-1)
    co_half = (weights * torch.atan2(cos_h, scaled)).sum(-1)
    square = cos_h.pow(2) + scaled.pow(2)
    slope = (weights * scale / square).sum(-1)
    tangent = (weights * scale / (_sinc(alpha) * square.sqrt())).sum(-1)
    ratio = _sinc(half) * tangent * torch.sin(co_half) / cos_h.squeeze(-1)
    return half, co_half, slope, ratio


class MobiusMixture(Transform):
    r"""A convex combination of Möbius dilations of :math:`S^{m-1}` about a learned axis.

    Write :math:`z = \cos\theta\,\mu + \sin\theta\,v` with :math:`\mu` the unit axis, :math:`\theta \in
    [0, \pi]` the polar angle and :math:`v \perp \mu` a unit tangent direction. The Möbius transformation
    :math:`f_w` with :math:`w` on the axis fixes :math:`\pm\mu`, keeps the direction :math:`v` and maps the
    polar angle by
    :math:`\theta \mapsto 2 \arctan(\lambda \tan\frac\theta2)` (a dilation by :math:`\lambda > 0` of the
    stereographic projection from :math:`-\mu`). This transform moves the polar angle by a convex
    combination of such maps,

    .. math:: g(\theta) = \sum_{k=1}^{M} \rho_k\, 2\arctan\bigl(\lambda_k \tan\tfrac\theta2\bigr), \qquad
        f(z) = \cos g(\theta)\,\mu + \sin g(\theta)\,v,

    the construction that Rezende et al. (2020) use on the circle, applied here to the polar angle, so
    it is a diffeomorphism of :math:`S^{m-1}` for every :math:`m \ge 2`: :math:`g` is a strictly
    increasing bijection of :math:`[0, \pi]` and, like each of its terms, odd about :math:`0` and
    :math:`\pi`, so :math:`f` is smooth at the poles :math:`\pm\mu` too. In polar coordinates the surface
    measure is :math:`\sin^{m-2}\theta\,d\theta\,d\sigma(v)`, so the log-determinant (of the Jacobian
    restricted to the tangent spaces) is

    .. math:: \log g'(\theta) + (m - 2) \log\frac{\sin g(\theta)}{\sin\theta},

    with :math:`\sin g / \sin\theta \to g'` at the poles. With :math:`M = 1` this is the Möbius map with
    :math:`w \parallel \mu`. On a base centred on :math:`\mu`, a mixture reshapes the radial profile
    (flatter or sharper caps, rings); on other bases, and composed with steps about other axes, Möbius
    or Householder steps, it bends densities into non-symmetric shapes. One step is limited near the
    "equator" of its axis: :math:`g'(\pi/2) = \sum_k \rho_k\, 2\lambda_k / (1 + \lambda_k^2) \le 1`, so it
    can stretch there only by stacking steps. The inverse has no closed form: it is found by bisection on
    :math:`g` (monotone), polished by Newton steps, and differentiable (implicit function theorem, one
    Newton step under autograd).

    Numerics: each point is handled about its nearer pole, by the symmetry :math:`\pi - g(\theta) =
    \sum_k \rho_k\, 2\arctan\bigl(\lambda_k^{-1} \tan\frac{\pi - \theta}2\bigr)` (the same map about
    :math:`-\mu`, scales :math:`1/\lambda_k`), so :math:`\theta \le \pi/2`; :math:`\tan\frac\theta2 =
    p / (r + |a|)` with :math:`a = z \cdot \mu`, :math:`p` the norm of the part of :math:`z \mp \mu`
    orthogonal to :math:`\mu` (an exact difference next to the pole), :math:`r = \sqrt{a^2 + p^2}`;
    and :math:`g/2`, :math:`(\pi - g)/2`, :math:`g'` and :math:`\sin g / \sin\theta` are sums and
    products of positive terms (see ``_half_angle_map``). So the log-determinant keeps full relative
    precision, with finite and accurate gradients, up to and on both poles, in float32 too (evaluating
    :math:`\sin g` from a rounded :math:`g \approx \pi` would keep no digits).

    :param raw: unconstrained parameters ``batch + (m + 2M,)`` (or a callable returning them): the axis
        (normalised), the log-scales :math:`\log\lambda_k` and the logits of the weights :math:`\rho`.
        Log-scales all 0 give the identity. The log-scales are used as given in :math:`[-4, 4]` and
        bounded smoothly beyond (``_bound_log_scale``) by :data:`MAX_MIXTURE_LOG_SCALE` :math:`\approx
        5.29`, the bound of the Möbius steps, so that :math:`\lambda_k^{\pm 2}` cannot overflow in float32
        and the log-determinant stays bounded.
    :param int ambient_dim: :math:`m`.
    """

    domain = constraints.sphere
    codomain = constraints.sphere
    bijective = True

    def __init__(self, raw: Tensor | Callable[[], Tensor], ambient_dim: int) -> None:
        super().__init__(cache_size=1)
        self._raw = raw
        self.m = int(ambient_dim)

    def params(self) -> tuple[Tensor, Tensor, Tensor]:
        """The unit axis ``(..., m)``, the (bounded) log-scales ``(..., M)`` and the weights ``(..., M)``."""
        raw = self._raw() if callable(self._raw) else self._raw
        components = (raw.shape[-1] - self.m) // 2
        if components < 1 or raw.shape[-1] != self.m + 2 * components:
            raise ValueError(
                f"MobiusMixture wants m + 2M = {self.m} + 2M parameters, got {raw.shape[-1]}"
            )
        axis, log_scale, logits = raw.split([self.m, components, components], dim=-1)
        return safe_normalize(axis), _bound_log_scale(log_scale), torch.softmax(logits, dim=-1)

    @staticmethod
    def _polar(x: Tensor, axis: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""About the pole :math:`\pm\mu` nearer to ``x``: the half-angle :math:`(\sin\frac\theta2,
        \cos\frac\theta2)` of the polar angle :math:`\theta \le \pi/2` about it, the component ``perp``
        of ``x`` orthogonal to the axis, and whether the pole is :math:`+\mu`."""
        along = (x * axis).sum(-1, keepdim=True)
        north = along >= 0
        diff = torch.where(north, x - axis, x + axis)  # exact next to the pole
        perp = diff - (diff * axis).sum(-1, keepdim=True) * axis
        along, north = along.squeeze(-1), north.squeeze(-1)
        sin_h = perp.norm(dim=-1)
        # tan(theta / 2) = p / (r + |a|), |a| written by branch: abs() has no derivative at a = 0
        cos_h = torch.hypot(sin_h, along) + torch.where(north, along, -along)
        norm = torch.hypot(sin_h, cos_h)
        return sin_h / norm, cos_h / norm, perp, north

    def _about_nearer_pole(self, x: Tensor) -> tuple[Tensor, ...]:
        """``(axis, sin_h, cos_h, perp, north, log_scale, weights)`` for points ``x``: the parameters,
        :meth:`_polar` about the nearer pole, and the log-scales of the map about that pole
        (negated about ``-axis``)."""
        axis, log_scale, weights = self.params()
        sin_h, cos_h, perp, north = self._polar(x, axis)
        log_scale = torch.where(north.unsqueeze(-1), log_scale, -log_scale)
        return axis, sin_h, cos_h, perp, north, log_scale, weights

    def _call(self, x: Tensor) -> Tensor:
        axis, sin_h, cos_h, perp, north, log_scale, weights = self._about_nearer_pole(x)
        half, co_half, _, ratio = _half_angle_map(sin_h, cos_h, log_scale, weights)
        cos = torch.where(half <= co_half, torch.cos(2.0 * half), -torch.cos(2.0 * co_half))
        cos = torch.where(north, cos, -cos)
        return safe_normalize(cos.unsqueeze(-1) * axis + ratio.unsqueeze(-1) * perp)

    def _inverse(self, y: Tensor) -> Tensor:
        axis, sin_h, cos_h, perp, north, log_scale, weights = self._about_nearer_pole(y)
        theta = self._solve(2.0 * torch.atan2(sin_h, cos_h), log_scale, weights)
        # sin(phi) / sin(theta) with phi = g(theta) the angle of y, its limit g'(0) at the pole
        half = 0.5 * theta
        _, _, _, ratio = _half_angle_map(torch.sin(half), torch.cos(half), log_scale, weights)
        cos = torch.where(north, torch.cos(theta), -torch.cos(theta))
        return safe_normalize(cos.unsqueeze(-1) * axis + perp / ratio.unsqueeze(-1))

    @staticmethod
    def _solve(phi: Tensor, log_scale: Tensor, weights: Tensor) -> Tensor:
        r"""The angle :math:`\theta` with :math:`g(\theta) = \phi`: bisection and Newton without
        gradients, then one Newton step with them (exact first-order gradients)."""
        with torch.no_grad():
            lo = torch.zeros_like(phi)
            hi = torch.full_like(phi, math.pi)
            for _ in range(30 if phi.dtype == torch.float64 else 16):
                mid = 0.5 * (lo + hi)
                below = _dilation_angle(mid, log_scale, weights)[0] < phi
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            theta = 0.5 * (lo + hi)
            for _ in range(3):  # quadratic convergence from a bracket of width pi / 2^iterations
                angle, slope = _dilation_angle(theta, log_scale, weights)
                theta = torch.minimum(torch.maximum(theta - (angle - phi) / slope, lo), hi)
        angle, slope = _dilation_angle(theta, log_scale, weights)
        return (theta - (angle - phi) / slope).clamp(0.0, math.pi)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        _, sin_h, cos_h, _, _, log_scale, weights = self._about_nearer_pole(x)
        _, _, slope, ratio = _half_angle_map(sin_h, cos_h, log_scale, weights)
        out = torch.log(slope)
        if self.m > 2:
            out = out + (self.m - 2) * torch.log(ratio)
        return out


class SphereFlow(nn.Module):
    r"""The flow steps of one sphere group of ``count`` factors :math:`S^{m-1}`, for a list of flow terms.

    Static parameters are per factor, shape ``(count, 1, ...)`` (``count > 1``, matching the factor plate
    at ``dim=-2``) or unbatched; amortized ones come from the encoder features ``h (N, H)`` through one
    linear layer per step, reshaped to ``(count, N, ...)`` or ``(N, ...)`` like the posterior's ``loc``.
    Every step starts at (or, for ``mobiusmix``, next to) the identity: Möbius ``w = 0``; mixture
    log-scales spread symmetrically in :math:`\pm 0.1` around 0 (to break the symmetry between the
    components) and random axes; Householder normals random, as in Pyro.

    :param int ambient_dim: :math:`m`.
    :param int count: number of factors of the group.
    :param terms: :class:`~pyro_svae.flows.spec.FlowTerm` s (their sphere kinds).
    :param int context_dim: width of the encoder features for an amortized flow, ``None`` for static.
    :param int components: number :math:`M` of Möbius dilations in a ``mobiusmix`` step.
    """

    def __init__(
        self,
        ambient_dim: int,
        count: int,
        terms: Sequence,
        context_dim: int | None = None,
        components: int = DEFAULT_MIXTURE_COMPONENTS,
    ) -> None:
        super().__init__()
        self.m, self.count = int(ambient_dim), int(count)
        self.components = int(components)
        if self.components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.amortized = context_dim is not None
        self.kinds: list[str] = []
        self._shapes: list[tuple[int, ...]] = []
        self.params = nn.ParameterList()
        self.nets = nn.ModuleList()
        for term in terms:
            if not term.spherical:
                raise ValueError(
                    f"the flow kind {term.kind!r} does not apply to spheres "
                    f"(sphere flows: householder, mobius, mobiusmix)"
                )
            # Householder: all the reflections of a term in one step, as Pyro's Householder
            if term.kind == "householder":
                shapes = [(term.steps, self.m)]
            elif term.kind == "mobius":
                shapes = [(self.m,)] * term.steps
            else:
                shapes = [(self.m + 2 * self.components,)] * term.steps
            for shape in shapes:
                self.kinds.append(term.kind)
                self._shapes.append(shape)
                size = int(torch.Size(shape).numel())
                if self.amortized:
                    net = nn.Linear(context_dim, self.count * size)
                    with torch.no_grad():
                        if term.kind == "householder":
                            net.bias.normal_()
                        else:
                            net.weight.mul_(1e-2)
                            net.bias.copy_(
                                self._initial(term.kind, (self.count,), shape).reshape(-1)
                            )
                    self.nets.append(net)
                else:
                    lead = (self.count, 1) if self.count > 1 else ()
                    self.params.append(nn.Parameter(self._initial(term.kind, lead, shape)))
                    self.nets.append(nn.Identity())  # keeps kinds/params/nets aligned

    def _initial(self, kind: str, lead: tuple[int, ...], shape: tuple[int, ...]) -> Tensor:
        if kind == "householder":
            return torch.randn(*lead, *shape)
        if kind == "mobius":
            return torch.zeros(*lead, *shape)
        m, k = self.m, self.components
        spread = torch.linspace(-0.1, 0.1, k) if k > 1 else torch.zeros(1)
        rest = torch.cat([spread, torch.zeros(k)]).expand(*lead, 2 * k)
        return torch.cat([torch.randn(*lead, m), rest], dim=-1)  # random axis per factor

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
            if kind == "householder":
                out.append(SphereHouseholder(param))
            elif kind == "mobius":
                out.append(MobiusTransform(param))
            else:
                out.append(MobiusMixture(param, self.m))
        return out

"""The von Mises–Fisher distribution with exact sampling and unbiased reparameterised gradients."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from torch import Tensor

from pyro_svae.ops import log_sphere_area, log_vmf_partition, vmf_mean_resultant

from .base import RotationallySymmetric
from .rotation import rotate_from_pole, sample_tangent_directions
from .vmf_marginal import marginal_dw_dkappa, sample_marginal, sample_marginal_mh

__all__ = ["VonMisesFisher"]

SAMPLERS = ("exact", "mh")


class VonMisesFisher(RotationallySymmetric):
    r"""Von Mises–Fisher distribution on the unit sphere :math:`S^{m-1} \subset \mathbb{R}^m`.

    .. math:: p(z; \mu, \kappa) = C_m(\kappa)\, e^{\kappa \mu^\top z}, \qquad
              C_m(\kappa) = \frac{\kappa^{m/2-1}}{(2\pi)^{m/2} I_{m/2-1}(\kappa)},

    with mean direction :math:`\mu` (``loc``, a unit vector) and concentration :math:`\kappa > 0`. As
    :math:`\kappa \to 0` it tends continuously to :class:`HypersphericalUniform`. The mean is
    :math:`A_m(\kappa)\mu` with :math:`A_m = I_{m/2}/I_{m/2-1}`.

    **Sampling is exact for every** :math:`(m, \kappa)`: the cosine :math:`w = \mu^\top z` is drawn from
    its 1-D marginal (von Mises angle for :math:`m = 2`, inverse CDF for :math:`m = 3`, Wood's rejection
    sampler for :math:`m \ge 4`), a uniform tangent direction is added and the result is reflected onto
    ``loc`` with a pole-safe Householder map (:mod:`pyro_svae.distributions.rotation`).

    **Gradients are unbiased in both parameters**: pathwise in ``loc`` and by implicit
    reparameterisation in ``concentration``,
    :math:`\partial w/\partial\kappa = -\partial_\kappa F(w;\kappa) / f(w;\kappa)`, with the CDF
    derivative computed by quadrature (:mod:`pyro_svae.distributions.vmf_marginal`). Differentiating
    through the accepted proposal of the rejection sampler (as the public S-VAE code does) omits the
    rejection correction and biases :math:`\partial_\kappa \mathbb{E}[\mu^\top z]` low (about -20 % at
    :math:`m = 4, \kappa \approx 3`, more for smaller :math:`m`; measured in tutorial 1).

    Example, a guide with one vMF factor per data point::

        def guide(x):
            pyro.module("encoder", encoder)
            loc, concentration = encoder(x)  # (N, m) unit vectors, (N,) positive
            with pyro.plate("data", x.size(0)):
                pyro.sample("z", VonMisesFisher(loc, concentration))

    :param torch.Tensor loc: unit mean directions, shape ``batch_shape + (m,)``, ``m >= 2``.
    :param concentration: :math:`\kappa > 0`, shape ``batch_shape`` (no trailing singleton dimension),
        or a number.
    :param str sampler: ``"exact"`` (default) or ``"mh"``: an independence Metropolis–Hastings chain on
        :math:`w` with Wood's envelope as proposal, ``mh_steps`` steps from a draw of the envelope. It is
        approximate (its bias decays geometrically with ``mh_steps``) but needs no data-dependent loop,
        which suits accelerators; gradients use the same implicit formula.
    :param int mh_steps: number of MH steps for ``sampler="mh"``.

    .. note:: ``log_prob``, ``entropy`` and the KL divergences are evaluated in float64 internally and
        returned in the parameters' dtype, so that float32 stays accurate for :math:`\kappa` up to 1e7
        and :math:`m` up to thousands.

    References:

    - A. T. A. Wood (1994), "Simulation of the von Mises Fisher distribution".
    - T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak (2018), "Hyperspherical Variational
      Auto-Encoders", UAI.
    - M. Figurnov, S. Mohamed, A. Mnih (2018), "Implicit Reparameterization Gradients", NeurIPS.
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.positive}
    scalar_name = "concentration"
    options = ("sampler", "mh_steps")

    def __init__(
        self,
        loc: Tensor,
        concentration: Tensor | float,
        *,
        sampler: str = "exact",
        mh_steps: int = 10,
        validate_args: bool | None = None,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if int(mh_steps) != mh_steps or mh_steps < 0:
            raise ValueError(f"mh_steps must be a non-negative integer, got {mh_steps!r}")
        self.sampler = sampler
        self.mh_steps = int(mh_steps)
        self._set_parameters(loc, concentration, validate_args)

    @property
    def mean(self) -> Tensor:
        return vmf_mean_resultant(self.dim, self.concentration).unsqueeze(-1) * self.loc

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        kappa = self.concentration.expand(shape[:-1])
        if self.sampler == "exact":
            w, one_minus_w, sign = sample_marginal(self.dim, kappa)
        else:
            (w, one_minus_w), sign = sample_marginal_mh(self.dim, kappa, self.mh_steps), None
        sin = torch.sqrt(one_minus_w * (2.0 - one_minus_w))
        if kappa.requires_grad:
            # Implicit reparameterisation: values unchanged, d/dkappa carried by (kappa - kappa.detach()).
            dw = marginal_dw_dkappa(
                self.dim,
                kappa.detach().to(torch.float64),
                w,
                one_minus_w,
                result_dtype=self.loc.dtype,
            )
            dsin = torch.where(sin > 0, -w / sin.clamp_min(1e-300), torch.zeros_like(sin)) * dw
            delta = (kappa - kappa.detach()).to(torch.float64)
            w, sin = w + dw * delta, sin + dsin * delta
        w, sin = w.to(self.loc.dtype), sin.to(self.loc.dtype)
        if sign is not None:  # m = 2: the tangent direction is the sign of the von Mises angle
            tangent = sign.to(self.loc.dtype).unsqueeze(-1)
        else:
            tangent = sample_tangent_directions(shape[:-1], self.dim, self.loc)
        return rotate_from_pole(self.loc, w, sin, tangent)

    def log_prob(self, value: Tensor) -> Tensor:
        value64, loc64 = self._checked_float64(value)
        kappa = self.concentration.to(torch.float64)
        cosine = (value64 * loc64).sum(-1)
        # kappa (mu^T z - 1) - (l(kappa) - kappa): no cancellation between terms of size kappa.
        log_density = kappa * (cosine - 1.0) - log_vmf_partition(self.dim, kappa, scaled=True)
        return (log_density - log_sphere_area(self.dim)).to(value.dtype)

    def kl_to_uniform(self) -> Tensor:
        """:math:`\\mathrm{KL}(\\mathrm{vMF} \\,\\|\\, U) = \\kappa A_m(\\kappa) - \\ell_m(\\kappa)`, shape ``batch_shape``.

        Relative error ~1e-14 for :math:`\\kappa \\le 10^3`, growing to ~2e-9 at :math:`\\kappa = 10^7`,
        where the term :math:`\\kappa(1 - A_m)` multiplies the rounding error of :math:`A_m` by :math:`\\kappa`.
        """
        return self._kl_to_uniform64().to(self.concentration.dtype)

    def _kl_to_uniform64(self) -> Tensor:
        """:meth:`kl_to_uniform` in float64 (also used by the KL to another vMF)."""
        kappa = self.concentration.to(torch.float64)
        a = vmf_mean_resultant(self.dim, kappa)
        # Small kappa: both terms are O(kappa^2). Large kappa: kappa (A - 1) - (l - kappa), both O(log kappa).
        small = kappa * a - log_vmf_partition(self.dim, kappa)
        large = kappa * (a - 1.0) - log_vmf_partition(self.dim, kappa, scaled=True)
        return torch.where(kappa <= 1.0, small, large)

    def entropy(self) -> Tensor:
        return log_sphere_area(self.dim) - self.kl_to_uniform()

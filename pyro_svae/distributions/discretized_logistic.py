r"""Discretised logistic likelihood for 8-bit grey images scaled to [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

__all__ = ["DiscretizedLogistic"]


def _log_expm1(x: Tensor) -> Tensor:
    """log(exp(x) - 1) for x > 0, finite (with finite gradients) for every x > 0."""
    large = x > 20.0
    return torch.where(
        large, x + torch.log1p(-torch.exp(-x)), torch.log(torch.expm1(x.clamp(max=20.0)))
    )


class _Grid(constraints.Constraint):
    """Values ``k / (num_bins - 1)`` for integer ``k`` in ``[0, num_bins - 1]``."""

    is_discrete = True

    def __init__(self, num_bins: int) -> None:
        super().__init__()
        self.num_bins = num_bins

    def check(self, value: Tensor) -> Tensor:
        scaled = value * (self.num_bins - 1)
        on_grid = (scaled - scaled.round()).abs() <= 1e-3
        return on_grid & (value >= 0) & (value <= 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_bins={self.num_bins})"


class DiscretizedLogistic(TorchDistribution):
    r"""A logistic distribution rounded to ``num_bins`` levels on [0, 1], tails folded into the end bins.

    With bin width :math:`\Delta = 1 / (K - 1)`, :math:`x_k = k \Delta` and :math:`\sigma` the logistic
    CDF,

    .. math::

        P(x_k) = \sigma\Big(\frac{x_k + \Delta/2 - \mu}{s}\Big) - \sigma\Big(\frac{x_k - \Delta/2 - \mu}{s}\Big),

    with the first and last bins taking the tails below :math:`\Delta/2` and above :math:`1 - \Delta/2`
    (Salimans et al. 2017; the grey-image likelihood of Tomczak & Welling 2018 for Frey Faces). It is a
    probability mass function, so a VAE's log-likelihood with it is a proper discrete log-probability,
    comparable across models, unlike a Gaussian density on [0, 1].

    ``log_prob`` is exact for every :math:`s > 0`: with :math:`a > b` the two standardised bin edges,
    :math:`\log(\sigma(a) - \sigma(b)) = b + \log(\mathrm{expm1}(a - b)) - \mathrm{softplus}(a) -
    \mathrm{softplus}(b)` has no cancellation, so no midpoint-density fallback is needed for narrow bins.

    Example: the observation site of a decoder that outputs a location and a log-scale per pixel::

        def model(x):
            ...
            loc, log_scale = decoder(z).chunk(2, dim=-1)
            pyro.sample("x", DiscretizedLogistic(loc, log_scale.exp()).to_event(1), obs=x)

    :param Tensor loc: location :math:`\mu` (on the [0, 1] scale of the data).
    :param Tensor scale: scale :math:`s > 0`.
    :param int num_bins: number of grey levels (256 for 8-bit images).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(
        self,
        loc: Tensor | float,
        scale: Tensor | float,
        num_bins: int = 256,
        *,
        validate_args: bool | None = None,
    ) -> None:
        if int(num_bins) < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        loc, scale = broadcast_all(loc, scale)
        dtype = torch.promote_types(loc.dtype, scale.dtype)
        self.loc, self.scale = loc.to(dtype), scale.to(dtype)
        self.num_bins = int(num_bins)
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return _Grid(self.num_bins)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.num_bins = self.num_bins
        super(DiscretizedLogistic, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def bin_width(self) -> float:
        return 1.0 / (self.num_bins - 1)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        half = 0.5 * self.bin_width
        inv_scale = self.scale.reciprocal()
        upper = (value + half - self.loc) * inv_scale
        lower = (value - half - self.loc) * inv_scale
        # exact log(sigma(upper) - sigma(lower)) for upper > lower
        interior = lower + _log_expm1(upper - lower) - F.softplus(upper) - F.softplus(lower)
        first = -F.softplus(-upper)  # log sigma(upper): the bin at 0 takes the lower tail
        last = -F.softplus(lower)  # log(1 - sigma(lower)): the bin at 1 takes the upper tail
        result = torch.where(value < half, first, interior)
        return torch.where(value > 1.0 - half, last, result)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps)
            y = self.loc.expand(shape) + self.scale.expand(shape) * (torch.log(u) - torch.log1p(-u))
            return (
                torch.round(y * (self.num_bins - 1)).clamp(0, self.num_bins - 1)
            ) * self.bin_width

    def cdf(self, value: Tensor) -> Tensor:
        """P(X <= value) for ``value`` on the grid."""
        cdf = torch.sigmoid((value + 0.5 * self.bin_width - self.loc) / self.scale)
        return torch.where(value > 1.0 - 0.5 * self.bin_width, torch.ones_like(cdf), cdf)

    @property
    def mean(self) -> Tensor:
        # E[X] = sum_{k >= 1} Δ P(X >= x_k) = Δ sum_{k=1}^{K-1} (1 - sigma((x_k - Δ/2 - mu)/s))
        edges = (
            torch.arange(1, self.num_bins, dtype=self.loc.dtype, device=self.loc.device) - 0.5
        ) * self.bin_width
        standardised = (edges - self.loc.unsqueeze(-1)) / self.scale.unsqueeze(-1)
        return torch.sigmoid(-standardised).sum(-1) * self.bin_width

    @property
    def mode(self) -> Tensor:
        """The most probable level: the one nearest the location, or an end bin holding a heavy tail."""
        nearest = (self.loc.clamp(0, 1) * (self.num_bins - 1)).round() * self.bin_width
        candidates = torch.stack([nearest, torch.zeros_like(nearest), torch.ones_like(nearest)])
        best = self.log_prob(candidates).argmax(0, keepdim=True)
        return candidates.gather(0, best).squeeze(0)

    @property
    def variance(self) -> Tensor:
        edges = (
            torch.arange(1, self.num_bins, dtype=self.loc.dtype, device=self.loc.device) - 0.5
        ) * self.bin_width
        survival = torch.sigmoid(-(edges - self.loc.unsqueeze(-1)) / self.scale.unsqueeze(-1))
        # E[X^2] = sum_k (x_k^2 - x_{k-1}^2) P(X >= x_k)
        levels = torch.arange(1, self.num_bins, dtype=self.loc.dtype, device=self.loc.device)
        steps = ((2 * levels - 1) * self.bin_width**2).to(self.loc)
        second = (survival * steps).sum(-1)
        return (second - self.mean**2).clamp(min=0)  # rounding can make a point mass negative

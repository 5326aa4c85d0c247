"""Base class of the rotationally symmetric sphere distributions: a mean direction and one scalar."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

from .util import broadcast_loc_and_scalar, check_event_dim

__all__ = ["RotationallySymmetric"]


class RotationallySymmetric(TorchDistribution):
    """A distribution on :math:`S^{m-1}` with density a function of :math:`\\mu^\\top z`.

    Subclasses have the parameters ``loc`` (``batch_shape + (m,)``) and one scalar per batch element
    whose attribute name is :attr:`scalar_name` (``"concentration"``, ``"time"``), and list in
    :attr:`options` their non-tensor settings, which :meth:`expand` copies. ``expand`` follows Pyro's
    ``asymmetriclaplace.py`` pattern, so that inside ``pyro.plate`` the site keeps its class (and its
    registered KL) instead of becoming an ``ExpandedDistribution``.
    """

    scalar_name: str = ""
    options: tuple[str, ...] = ()
    support = constraints.sphere
    has_rsample = True

    def _set_parameters(self, loc: Tensor, scalar, validate_args: bool | None) -> None:
        loc, scalar = broadcast_loc_and_scalar(loc, scalar, self.scalar_name)
        self.loc = loc
        setattr(self, self.scalar_name, scalar)
        TorchDistribution.__init__(self, scalar.shape, loc.shape[-1:], validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, loc, *scalar, **named_scalar):
        """``(batch_shape, event_shape)`` from the shapes of ``loc`` and of the scalar parameter
        (passed positionally or by its name)."""
        (scalar_shape,) = (*scalar, *named_scalar.values())
        return torch.broadcast_shapes(loc[:-1], scalar_shape), loc[-1:]

    def expand(self, batch_shape, _instance=None):
        cls = type(self)
        new = self._get_checked_instance(cls, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        setattr(new, self.scalar_name, getattr(self, self.scalar_name).expand(batch_shape))
        for name in self.options:
            setattr(new, name, getattr(self, name))
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    def _checked_float64(self, value: Tensor) -> tuple[Tensor, Tensor]:
        """Validate a ``log_prob`` argument; return it and ``loc`` in float64 (densities are computed
        in float64 and returned in the value's dtype)."""
        check_event_dim(value, self.dim)
        if self._validate_args:
            self._validate_sample(value)
        return value.to(torch.float64), self.loc.to(torch.float64)

    @property
    def dim(self) -> int:
        """The ambient dimension ``m``."""
        return self.event_shape[0]

    @property
    def mode(self) -> Tensor:
        return self.loc

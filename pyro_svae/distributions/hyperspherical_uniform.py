"""The uniform distribution on the unit sphere."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

from pyro_svae.ops import log_sphere_area

from .util import check_event_dim

__all__ = ["HypersphericalUniform"]


class HypersphericalUniform(TorchDistribution):
    r"""Uniform distribution on the unit sphere :math:`S^{m-1} \subset \mathbb{R}^m`.

    .. math:: p(z) = |S^{m-1}|^{-1}, \qquad |S^{m-1}| = \frac{2\pi^{m/2}}{\Gamma(m/2)}.

    The usual prior of a hyperspherical VAE: every KL from a sphere posterior to it is registered, so
    ``TraceMeanField_ELBO`` uses closed forms::

        def model(x):
            with pyro.plate("data", x.size(0)):
                z = pyro.sample("z", HypersphericalUniform(10, dtype=x.dtype, device=x.device))
                ...

    Inside the plate the distribution is expanded to the plate's batch shape (an instance of this
    class, not an ``ExpandedDistribution``).

    :param int dim: the ambient dimension ``m`` (``event_shape == (m,)``); ``m >= 2``.
    :param batch_shape: optional batch shape.
    :param dtype: dtype of samples and log densities (default: torch's default dtype).
    :param device: device of samples and log densities (default: CPU).

    The log surface area is computed once in float64 (exact for ``m`` up to ``1e5`` and beyond) and cast
    once to ``dtype``.
    """

    arg_constraints: dict = {}
    support = constraints.sphere
    has_rsample = True

    def __init__(
        self,
        dim: int,
        batch_shape: torch.Size | tuple = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(dim, bool) or int(dim) != dim or dim < 2:
            raise ValueError(f"dim must be an integer >= 2 (the ambient dimension m), got {dim!r}")
        self.dim = int(dim)
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        super().__init__(
            torch.Size(batch_shape), torch.Size([self.dim]), validate_args=validate_args
        )

    @staticmethod
    def infer_shapes(dim: int, batch_shape: tuple = ()) -> tuple[tuple, tuple]:
        return tuple(batch_shape), (int(dim),)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if torch.broadcast_shapes(batch_shape, self.batch_shape) != batch_shape:
            raise ValueError(
                f"cannot expand batch shape {tuple(self.batch_shape)} to {tuple(batch_shape)}"
            )
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new.dim, new.dtype, new.device = self.dim, self.dtype, self.device
        super(HypersphericalUniform, new).__init__(
            batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @property
    def log_surface_area(self) -> float:
        """:math:`\\log|S^{m-1}|` as a Python float (float64)."""
        return log_sphere_area(self.dim)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        x = torch.randn(shape, dtype=self.dtype, device=self.device)
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

    def log_prob(self, value: Tensor) -> Tensor:
        check_event_dim(value, self.dim)
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -self.log_surface_area, dtype=value.dtype, device=value.device)

    def entropy(self) -> Tensor:
        return torch.full(
            self.batch_shape, self.log_surface_area, dtype=self.dtype, device=self.device
        )

    @property
    def mean(self) -> Tensor:
        return torch.zeros(
            self.batch_shape + self.event_shape, dtype=self.dtype, device=self.device
        )

    def __repr__(self) -> str:
        return f"HypersphericalUniform(dim={self.dim}, batch_shape={tuple(self.batch_shape)})"

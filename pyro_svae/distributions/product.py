r"""Products of spheres :math:`S^{m_1-1} \times \dots \times S^{m_k-1}` as one distribution.

Davidson, Tomczak & Gavves (2019) replace one sphere :math:`S^{m-1}` by a product of
lower-dimensional spheres, each factor with its own mean direction and concentration.
:class:`ProductSphere` is that product as a single Pyro distribution over the concatenated vector in
:math:`\mathbb{R}^{m_1 + \dots + m_k}`, built from any mix of sphere distributions, with factor
order preserved. The KL divergence between two products with the same factor dimensions is
registered as the sum of the factor KLs, so ``TraceMeanField_ELBO`` uses closed forms wherever the
factors have them.

Equal-dimension factors can also be written the Pyro way, as one batched distribution
``VonMisesFisher(loc[..., K, m], kappa[..., K])`` under ``pyro.plate("spheres", K)`` or with
``.to_event(1)``; both forms give the same ELBO (see ``tests/distributions/test_product.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor
from torch.distributions import Distribution, register_kl
from torch.distributions import kl_divergence as _torch_kl_divergence

from .hyperspherical_uniform import HypersphericalUniform
from .util import check_event_dim

__all__ = ["ProductSphere", "ProductSphereConstraint"]

_SPHERE_TYPE = type(constraints.sphere)


class ProductSphereConstraint(constraints.Constraint):
    r"""Constrain to a product of unit spheres: every block of the last dimension is a unit vector.

    The blocks are consecutive slices of sizes ``dims``; each is checked with the tolerance of
    ``pyro.distributions.constraints.sphere``: :math:`\big|\|z_i\| - 1\big| <
    \mathrm{reltol} \cdot \varepsilon \sqrt{m_i}`. A value whose last dimension is not
    ``sum(dims)`` fails everywhere.

    :param dims: ambient dimension :math:`m_i` of each factor.
    """

    is_discrete = False
    event_dim = 1

    def __init__(self, dims: Sequence[int]) -> None:
        self.dims = tuple(int(d) for d in dims)
        super().__init__()

    @property
    def reltol(self) -> float:
        """Relative tolerance in units of ``finfo(dtype).eps``, that of ``constraints.sphere``."""
        return constraints.sphere.reltol

    def check(self, value: Tensor) -> Tensor:
        if value.dim() < 1 or value.size(-1) != sum(self.dims):
            return torch.zeros(value.shape[:-1], dtype=torch.bool, device=value.device)
        eps = torch.finfo(value.dtype).eps
        ok = torch.ones(value.shape[:-1], dtype=torch.bool, device=value.device)
        for block, dim in zip(torch.split(value, self.dims, dim=-1), self.dims, strict=True):
            error = (torch.linalg.vector_norm(block, dim=-1) - 1).abs()
            ok = ok & (error < self.reltol * eps * dim**0.5)
        return ok

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProductSphereConstraint) and other.dims == self.dims

    def __hash__(self) -> int:
        return hash((ProductSphereConstraint, self.dims))

    def __repr__(self) -> str:
        return f"ProductSphereConstraint(dims={self.dims})"


def _is_sphere_support(distribution: Distribution) -> bool:
    try:
        support = distribution.support
    except NotImplementedError:
        return False
    return isinstance(support, _SPHERE_TYPE)


class ProductSphere(TorchDistribution):
    r"""Product of independent sphere distributions, over the concatenation of their samples.

    .. math:: z = (z_1, \dots, z_k) \in S^{m_1-1} \times \dots \times S^{m_k-1}
              \subset \mathbb{R}^{m_1 + \dots + m_k}, \qquad
              \log p(z) = \sum_{i=1}^k \log p_i(z_i),

    so the entropy is :math:`\sum_i H[p_i]`, the mean is
    :math:`(\mathbb{E} z_1, \dots, \mathbb{E} z_k)` and
    :math:`\mathrm{KL}(p \,\|\, q) = \sum_i \mathrm{KL}(p_i \,\|\, q_i)` for two products with
    the same factor dimensions (registered with ``torch.distributions.kl_divergence``, hence used by
    ``TraceMeanField_ELBO``; a factor pair with no closed form raises ``NotImplementedError`` and
    the ELBO falls back to Monte Carlo).

    The factors may be any sphere distributions (``support`` is ``constraints.sphere`` and
    ``event_shape == (m_i,)``): :class:`VonMisesFisher`, :class:`PowerSpherical`,
    :class:`HypersphericalUniform`, a spherical diffusion, in any mix and **in the order given**
    (unlike the public code of the paper, which sorts the dimensions). Their batch shapes are
    broadcast to the product's ``batch_shape``; ``event_shape == (m_1 + ... + m_k,)``.
    :meth:`split` cuts a sample back into its factors.

    Example, a guide and a model with :math:`S^4 \times S^4 \times S^1 \subset \mathbb{R}^{12}`::

        dims = (5, 5, 2)

        def guide(x):
            pyro.module("encoder", encoder)
            locs, kappas = encoder(x)  # lists: (N, m_i) unit vectors, (N,) concentrations
            with pyro.plate("data", x.size(0)):
                pyro.sample("z", ProductSphere(
                    [VonMisesFisher(loc, kappa) for loc, kappa in zip(locs, kappas)]))

        def model(x):
            pyro.module("decoder", decoder)
            with pyro.plate("data", x.size(0)):
                z = pyro.sample("z", ProductSphere.uniform(dims, dtype=x.dtype))  # (N, 12)
                pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    :param components: the factor distributions, a non-empty sequence.
    :param validate_args: as for every ``torch.distributions.Distribution`` (keyword-only).
    :raises ValueError: on an empty sequence, a component that is not a distribution on a sphere
        (event shape not ``(m,)`` with ``m >= 2`` or support not ``constraints.sphere``), or batch
        shapes that do not broadcast.

    .. note:: Samples of components with different dtypes are concatenated with torch's type
        promotion; build all factors in one dtype.

    References:

    - T. R. Davidson, J. M. Tomczak, E. Gavves (2019), "Increasing Expressivity of a Hyperspherical
      VAE", NeurIPS Bayesian Deep Learning workshop.
    - T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak (2018), "Hyperspherical
      Variational Auto-Encoders", UAI.
    """

    arg_constraints: ClassVar[dict] = {}

    def __init__(
        self, components: Sequence[Distribution], *, validate_args: bool | None = None
    ) -> None:
        if isinstance(components, Distribution) or not isinstance(components, Sequence):
            raise ValueError(
                "components must be a sequence (list or tuple) of sphere distributions, "
                f"got {type(components).__name__}"
            )
        components = tuple(components)
        if not components:
            raise ValueError(
                "ProductSphere needs at least one component, got an empty sequence; "
                "expected e.g. [VonMisesFisher(loc1, k1), VonMisesFisher(loc2, k2)]"
            )
        for i, component in enumerate(components):
            if not isinstance(component, Distribution):
                raise ValueError(
                    f"component {i} must be a sphere distribution, got {type(component).__name__}"
                )
            shape = tuple(component.event_shape)
            if len(shape) != 1 or shape[0] < 2 or not _is_sphere_support(component):
                raise ValueError(
                    f"component {i} must be a distribution on a sphere S^(m-1) in R^m: event_shape "
                    f"(m,) with m >= 2 and support constraints.sphere; got "
                    f"{type(component).__name__} with event_shape {shape} and support "
                    f"{getattr(component, 'support', None)!r}"
                    + (" (pass its .components)" if isinstance(component, ProductSphere) else "")
                )
        try:
            batch_shape = torch.broadcast_shapes(*(c.batch_shape for c in components))
        except RuntimeError as error:
            shapes = [tuple(c.batch_shape) for c in components]
            raise ValueError(
                f"the components' batch shapes {shapes} do not broadcast to a common batch shape"
            ) from error
        self._components = tuple(
            c if c.batch_shape == batch_shape else c.expand(batch_shape) for c in components
        )
        self._dims = tuple(int(c.event_shape[0]) for c in components)
        super().__init__(batch_shape, torch.Size([sum(self._dims)]), validate_args=validate_args)

    @classmethod
    def uniform(
        cls,
        dims: Sequence[int],
        batch_shape: torch.Size | tuple = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        validate_args: bool | None = None,
    ) -> ProductSphere:
        """The uniform distribution on the product, a product of :class:`HypersphericalUniform`.

        The usual prior: ``ProductSphere.uniform((5, 5))`` on :math:`S^4 \\times S^4 \\subset
        \\mathbb{R}^{10}`.

        :param dims: ambient dimension :math:`m_i \\ge 2` of each factor (its ``event_shape``).
        """
        if isinstance(dims, int) or not isinstance(dims, Sequence) or not dims:
            raise ValueError(
                f"dims must be a non-empty sequence of ambient dimensions m_i >= 2, e.g. (5, 5), "
                f"got {dims!r}"
            )
        return cls(
            [HypersphericalUniform(m, batch_shape, dtype=dtype, device=device) for m in dims],
            validate_args=validate_args,
        )

    @staticmethod
    def infer_shapes(components) -> tuple[torch.Size, torch.Size]:
        """Shapes of the product of components whose ``(batch_shape, event_shape)`` are given.

        :param components: a sequence of ``(batch_shape, event_shape)`` pairs, one per factor.
        """
        batch_shape = torch.broadcast_shapes(*(tuple(b) for b, _ in components))
        return batch_shape, torch.Size([sum(int(e[-1]) for _, e in components)])

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ProductSphere, _instance)
        batch_shape = torch.Size(batch_shape)
        new._components = tuple(c.expand(batch_shape) for c in self._components)
        new._dims = self._dims
        super(ProductSphere, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @property
    def components(self) -> tuple[Distribution, ...]:
        """The factor distributions, in order, each expanded to ``batch_shape``."""
        return self._components

    @property
    def dims(self) -> tuple[int, ...]:
        """Ambient dimension :math:`m_i` of each factor, in order."""
        return self._dims

    @property
    def has_rsample(self) -> bool:
        return all(c.has_rsample for c in self._components)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> ProductSphereConstraint:
        return ProductSphereConstraint(self._dims)

    def split(self, value: Tensor) -> tuple[Tensor, ...]:
        """Cut ``value`` of shape ``(..., sum(dims))`` into its factors (views, ``(..., m_i)``)."""
        check_event_dim(value, self.event_shape[0])
        return tuple(torch.split(value, self._dims, dim=-1))

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        if not self.has_rsample:
            names = [type(c).__name__ for c in self._components if not c.has_rsample]
            raise NotImplementedError(f"ProductSphere.rsample: components {names} have no rsample")
        return torch.cat([c.rsample(sample_shape) for c in self._components], dim=-1)

    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            return torch.cat([c.sample(sample_shape) for c in self._components], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        check_event_dim(value, self.event_shape[0])
        if self._validate_args:
            self._validate_sample(value)
        blocks = torch.split(value, self._dims, dim=-1)
        return sum(c.log_prob(b) for c, b in zip(self._components, blocks, strict=True))

    def entropy(self) -> Tensor:
        return sum(c.entropy() for c in self._components)

    @property
    def mean(self) -> Tensor:
        return torch.cat([c.mean for c in self._components], dim=-1)

    @property
    def mode(self) -> Tensor:
        return torch.cat([c.mode for c in self._components], dim=-1)

    def __repr__(self) -> str:
        inner = ", ".join(repr(c) for c in self._components)
        return f"ProductSphere([{inner}], batch_shape={tuple(self.batch_shape)})"


@register_kl(ProductSphere, ProductSphere)
def _kl_product_product(p: ProductSphere, q: ProductSphere) -> Tensor:
    r""":math:`\mathrm{KL}(p \,\|\, q) = \sum_i \mathrm{KL}(p_i \,\|\, q_i)`, of the broadcast
    batch shape."""
    if p.dims != q.dims:
        raise ValueError(
            f"KL between products of spheres needs the same factor dimensions in the same order, "
            f"got dims {p.dims} and {q.dims}"
        )
    batch_shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    total = None
    for i, (p_i, q_i) in enumerate(zip(p.components, q.components, strict=True)):
        try:
            kl = _torch_kl_divergence(p_i, q_i)
        except NotImplementedError as error:
            raise NotImplementedError(
                f"ProductSphere KL: no closed form for factor {i}, "
                f"KL({type(p_i).__name__} || {type(q_i).__name__})"
            ) from error
        total = kl if total is None else total + kl
    return total.expand(batch_shape) if total.shape != batch_shape else total

r"""Latent-space specs such as ``"vmf:9"`` or ``"vmf:4,4"``, shared by the models and the CLI.

Dimensions follow the papers' **manifold** convention: the number after the family is the dimension
of the manifold, not of the space it sits in.

==================== ================================================ =======
spec                 latent space                                     ambient
==================== ================================================ =======
``"vmf:9"``          :math:`S^9 \subset \mathbb{R}^{10}`              10
``"vmf:4,4"``        :math:`S^4 \times S^4 \subset \mathbb{R}^{10}`   10
``"ps:2,2,2"``       :math:`S^2 \times S^2 \times S^2`                9
``"vmf:4,1"``        :math:`S^4 \times S^1` (mixed dimensions)        7
``"diffusion:9"``    :math:`S^9`, spherical diffusion posterior       10
``"normal:10"``      :math:`\mathbb{R}^{10}`, Gaussian posterior      10
``"vmf:4+normal:2"`` :math:`S^4 \times \mathbb{R}^2`                  7
==================== ================================================ =======

Grammar (case-insensitive, whitespace ignored)::

    spec   := term ("+" term)*
    term   := family ":" dim ("," dim)*
    family := "vmf" | "ps" | "powerspherical" | "diffusion" | "normal" | "gaussian"
    dim    := positive integer

Sphere families (``vmf``, ``ps``, ``diffusion``) take one or more comma-separated manifold
dimensions, one per factor :math:`S^{d}`, in the order given (the order is kept: ``"vmf:4,1"`` and
``"vmf:1,4"`` differ). ``normal`` takes exactly one dimension and appears at most once, since a
product of Gaussians is a Gaussian: write ``"normal:10"``, not ``"normal:5,5"``. ``S^0``
(dimension 0) is rejected; ``S^1`` (a circle in :math:`\mathbb{R}^2`) is allowed.

Example, building the variational family of a model from a spec::

    spec = parse_latent_spec("vmf:4,4,1")
    spec.ambient_dim            # 17 = 5 + 5 + 2, the width of the encoder's mean-direction output
    for group in spec.groups(): # one plate per run of equal factors, in order
        group.family, group.count, group.ambient_dim, group.start, group.stop
        # ('vmf', 2, 5, 0, 10) then ('vmf', 1, 2, 10, 12)
    str(spec)                   # 'vmf:4,4,1' (canonical form; parse_latent_spec(str(spec)) == spec)

References:

- T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak (2018), "Hyperspherical Variational
  Auto-Encoders", UAI.
- T. R. Davidson, J. M. Tomczak, E. Gavves (2019), "Increasing Expressivity of a Hyperspherical
  VAE", NeurIPS Bayesian Deep Learning workshop (products of spheres).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "EUCLIDEAN_FAMILIES",
    "FAMILY_ALIASES",
    "SPHERE_FAMILIES",
    "LatentFactor",
    "LatentGroup",
    "LatentSpec",
    "parse_latent_spec",
]

SPHERE_FAMILIES: tuple[str, ...] = ("vmf", "ps", "diffusion")
EUCLIDEAN_FAMILIES: tuple[str, ...] = ("normal",)
FAMILY_ALIASES: dict[str, str] = {
    "vmf": "vmf",
    "ps": "ps",
    "powerspherical": "ps",
    "diffusion": "diffusion",
    "normal": "normal",
    "gaussian": "normal",
}

_EXAMPLES = (
    "e.g. 'vmf:9' (S^9 in R^10), 'vmf:4,4' (S^4 x S^4 in R^10), 'normal:10' or 'vmf:4+normal:2'"
)
_DIM = re.compile(r"[0-9]+", re.ASCII)


def _error(spec: str, reason: str) -> ValueError:
    return ValueError(f"invalid latent spec {spec!r}: {reason}; expected {_EXAMPLES}")


def _family_names() -> str:
    return ", ".join(f"{alias!r}" for alias in FAMILY_ALIASES)


@dataclass(frozen=True)
class LatentFactor:
    r"""One latent factor: a sphere :math:`S^d \subset \mathbb{R}^{d+1}` or :math:`\mathbb{R}^d`.

    :param str family: canonical family name: ``"vmf"``, ``"ps"``, ``"diffusion"`` or ``"normal"``.
    :param int manifold_dim: :math:`d \ge 1` (the papers' convention: ``vmf`` with ``d = 9`` is
        :math:`S^9 \subset \mathbb{R}^{10}`).
    """

    family: str
    manifold_dim: int

    def __post_init__(self) -> None:
        if self.family not in SPHERE_FAMILIES + EUCLIDEAN_FAMILIES:
            raise ValueError(
                f"family must be one of {SPHERE_FAMILIES + EUCLIDEAN_FAMILIES} (canonical names), "
                f"got {self.family!r}"
            )
        dim = self.manifold_dim
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(
                f"manifold_dim must be a positive integer (S^0 is not allowed), got {dim!r}"
            )

    @property
    def is_sphere(self) -> bool:
        """Whether the factor is a sphere (``vmf``, ``ps``, ``diffusion``)."""
        return self.family in SPHERE_FAMILIES

    @property
    def ambient_dim(self) -> int:
        """Dimension of the space holding the factor: ``d + 1`` (sphere) or ``d`` (``normal``)."""
        return self.manifold_dim + 1 if self.is_sphere else self.manifold_dim

    @property
    def manifold(self) -> str:
        """``"S^d"`` or ``"R^d"``."""
        return f"S^{self.manifold_dim}" if self.is_sphere else f"R^{self.manifold_dim}"

    def __str__(self) -> str:
        return f"{self.family}:{self.manifold_dim}"


@dataclass(frozen=True)
class LatentGroup(LatentFactor):
    """A run of consecutive, identical factors: ``count`` copies of one family on one manifold.

    A model builder draws a group with one distribution, e.g. ``VonMisesFisher(loc[..., count, m],
    kappa[..., count])`` under ``pyro.plate(..., count)`` or ``.to_event(1)``, and writes it to
    ``z[..., start:stop]`` (``stop - start == count * ambient_dim``). ``ambient_dim`` and ``is_sphere``
    are those of one factor.

    :param str family: canonical family name.
    :param int manifold_dim: manifold dimension ``d`` of each factor.
    :param int count: number of factors in the run.
    :param int start: offset of the group in the concatenated ambient vector.
    """

    count: int = 1
    start: int = 0

    @property
    def size(self) -> int:
        """Total ambient width ``count * ambient_dim``."""
        return self.count * self.ambient_dim

    @property
    def stop(self) -> int:
        """End offset (exclusive) in the concatenated ambient vector."""
        return self.start + self.size


@dataclass(frozen=True)
class LatentSpec:
    r"""A latent space :math:`M_1 \times \dots \times M_k`, factors in the order given.

    Build one with :func:`parse_latent_spec`. ``str(spec)`` (or :meth:`format`) gives the
    canonical spec, with consecutive factors of one family merged (``"vmf:4+vmf:1"`` becomes
    ``"vmf:4,1"``), and ``parse_latent_spec(str(spec)) == spec``.

    :param factors: the factors, a non-empty tuple of :class:`LatentFactor`.
    """

    factors: tuple[LatentFactor, ...]

    def __post_init__(self) -> None:
        factors = tuple(self.factors) if isinstance(self.factors, (tuple, list)) else ()
        if not factors or not all(isinstance(f, LatentFactor) for f in factors):
            raise ValueError(
                f"factors must be a non-empty sequence of LatentFactor, got {self.factors!r}"
            )
        if sum(not f.is_sphere for f in factors) > 1:
            raise ValueError(
                "a latent space has at most one Euclidean ('normal') factor, since a product of "
                f"Gaussians is a Gaussian; got {factors!r}"
            )
        object.__setattr__(self, "factors", factors)

    @property
    def ambient_dim(self) -> int:
        """Width of the concatenated latent vector, the sum of the factors' ambient dimensions."""
        return sum(f.ambient_dim for f in self.factors)

    @property
    def manifold_dim(self) -> int:
        """Dimension of the product manifold, the sum of the factors' manifold dimensions."""
        return sum(f.manifold_dim for f in self.factors)

    @property
    def families(self) -> tuple[str, ...]:
        """The distinct families, in order of first appearance."""
        return tuple(dict.fromkeys(f.family for f in self.factors))

    @property
    def is_product(self) -> bool:
        """Whether there is more than one factor."""
        return len(self.factors) > 1

    @property
    def is_spherical(self) -> bool:
        """Whether every factor is a sphere."""
        return all(f.is_sphere for f in self.factors)

    @property
    def ambient_dims(self) -> tuple[int, ...]:
        """Ambient dimension of each factor, in order (the ``ProductSphere.dims`` of the spec)."""
        return tuple(f.ambient_dim for f in self.factors)

    def groups(self) -> tuple[LatentGroup, ...]:
        """Runs of consecutive identical ``(family, manifold_dim)`` factors, in order.

        ``"vmf:4,4"`` gives one group of two :math:`S^4` factors; ``"vmf:4,1"`` two groups;
        ``"vmf:4,1,4"`` three (order is never changed, so equal factors that are not adjacent stay
        in separate groups).
        """
        groups: list[LatentGroup] = []
        start = 0
        for factor in self.factors:
            last = groups[-1] if groups else None
            if last is not None and (last.family, last.manifold_dim) == (
                factor.family,
                factor.manifold_dim,
            ):
                groups[-1] = LatentGroup(last.family, last.manifold_dim, last.count + 1, last.start)
            else:
                groups.append(LatentGroup(factor.family, factor.manifold_dim, 1, start))
            start += factor.ambient_dim
        return tuple(groups)

    def format(self) -> str:
        """The canonical spec string, e.g. ``"vmf:4,4+normal:2"``."""
        terms: list[tuple[str, list[int]]] = []
        for factor in self.factors:
            if terms and terms[-1][0] == factor.family:
                terms[-1][1].append(factor.manifold_dim)
            else:
                terms.append((factor.family, [factor.manifold_dim]))
        return "+".join(f"{family}:{','.join(map(str, dims))}" for family, dims in terms)

    def describe(self) -> str:
        """Human-readable space, e.g. ``"S^4 × S^4 ⊂ R^10"``."""
        return f"{' × '.join(f.manifold for f in self.factors)} ⊂ R^{self.ambient_dim}"

    def __str__(self) -> str:
        return self.format()


def parse_latent_spec(spec: str | LatentSpec) -> LatentSpec:
    """Parse a latent spec such as ``"vmf:9"``, ``"vmf:4,4"``, ``"ps:2,2,2"``, ``"vmf:4+normal:2"``.

    See the module docstring for the grammar and the manifold-dimension convention. A
    :class:`LatentSpec` is returned unchanged.

    :raises TypeError: if ``spec`` is not a string.
    :raises ValueError: on an empty spec, an unknown family, a missing or non-integer dimension, a
        dimension ``< 1``, a ``normal`` term with several dimensions, or more than one ``normal``
        term; the message quotes the spec and gives valid examples.
    """
    if isinstance(spec, LatentSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"latent spec must be a string such as 'vmf:9', got {type(spec).__name__}")
    text = "".join(spec.split()).lower()
    if not text:
        raise _error(spec, "the spec is empty")
    factors: list[LatentFactor] = []
    for term in text.split("+"):
        if not term:
            raise _error(spec, "empty term around '+'")
        family_name, colon, dims_text = term.partition(":")
        if family_name not in FAMILY_ALIASES:
            raise _error(spec, f"unknown family {family_name!r} (known: {_family_names()})")
        family = FAMILY_ALIASES[family_name]
        if not colon or not dims_text:
            raise _error(spec, f"no dimension after {family_name!r}, write {family_name}:<dim>")
        dims: list[int] = []
        for item in dims_text.split(","):
            if not _DIM.fullmatch(item):
                raise _error(
                    spec, f"dimension {item!r} of {family_name!r} is not a positive integer"
                )
            dim = int(item)
            if dim < 1:
                raise _error(
                    spec,
                    f"dimension {dim} of {family_name!r} must be >= 1 "
                    "(manifold dimension: S^0 is not allowed, S^1 is the circle in R^2)",
                )
            dims.append(dim)
        if family not in SPHERE_FAMILIES and len(dims) > 1:
            raise _error(
                spec,
                f"{family_name!r} takes a single dimension (a product of Gaussians is a Gaussian), "
                f"write {family}:{sum(dims)}",
            )
        factors.extend(LatentFactor(family, dim) for dim in dims)
    if sum(not f.is_sphere for f in factors) > 1:
        total = sum(f.manifold_dim for f in factors if not f.is_sphere)
        raise _error(spec, f"more than one 'normal' term, merge them into one: normal:{total}")
    return LatentSpec(tuple(factors))

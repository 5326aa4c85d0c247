r"""Flow specs such as ``"planar:16"`` or ``"householder:2+mobius:1"``, shared by the models and the CLI.

Grammar (case-insensitive, whitespace ignored)::

    spec  := term ("+" term)*
    term  := kind ":" steps
    kind  := "planar" | "radial" | "householder" | "nice" | "mobius" | "mobiusmix"
    steps := positive integer

Each term adds ``steps`` flow steps, in order, to every latent group the kind applies to:

=============== ================ ===============================================================
kind            applies to       transform
=============== ================ ===============================================================
``planar``      ``normal``       planar flow (Rezende & Mohamed 2015), Pyro's ``Planar``
``radial``      ``normal``       radial flow (Rezende & Mohamed 2015), Pyro's ``Radial``
``householder`` ``normal``,      Householder reflections (Tomczak & Welling 2016), Pyro's
                spheres          ``Householder``; on a sphere an isometry (log-det 0)
``nice``        ``normal``       additive coupling layers with alternating halves and a final
                                 diagonal scaling (Dinh et al. 2015)
``mobius``      spheres          Möbius transformations of :math:`S^{m-1}` (Rezende et al. 2020)
``mobiusmix``   spheres          convex combinations of Möbius dilations about a learned axis,
                                 acting on the polar angle (:class:`~pyro_svae.flows.MobiusMixture`)
=============== ================ ===============================================================

The flow type is ``"static"`` (parameters shared by all data points) or ``"amortized"`` (parameters
produced from the encoder features of each data point).

A group whose flow has only ``householder`` steps keeps its base posterior's closed-form KL
(:class:`~pyro_svae.distributions.OrthogonalFlowDistribution`); every other flow makes the KL a Monte
Carlo estimate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "EUCLIDEAN_FLOWS",
    "FLOW_KINDS",
    "FLOW_TYPES",
    "SPHERE_FLOWS",
    "FlowSpec",
    "FlowTerm",
    "parse_flow_spec",
]

EUCLIDEAN_FLOWS: tuple[str, ...] = ("planar", "radial", "householder", "nice")
SPHERE_FLOWS: tuple[str, ...] = ("householder", "mobius", "mobiusmix")
FLOW_KINDS: tuple[str, ...] = ("planar", "radial", "householder", "nice", "mobius", "mobiusmix")
FLOW_TYPES: tuple[str, ...] = ("static", "amortized")
_EXAMPLES = (
    "e.g. 'planar:16', 'radial:8', 'householder:4', 'nice:4', 'mobius:1', 'mobiusmix:4' "
    "or 'householder:2+mobiusmix:2'"
)
_TERM = re.compile(r"([a-z]+):([0-9]+)", re.ASCII)


def _error(spec: str, reason: str) -> ValueError:
    return ValueError(f"invalid flow spec {spec!r}: {reason}; expected {_EXAMPLES}")


@dataclass(frozen=True)
class FlowTerm:
    """``steps`` consecutive flow steps of one ``kind``."""

    kind: str
    steps: int

    def __post_init__(self) -> None:
        if self.kind not in FLOW_KINDS:
            raise ValueError(f"flow kind must be one of {FLOW_KINDS}, got {self.kind!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"flow steps must be a positive integer, got {self.steps!r}")

    @property
    def euclidean(self) -> bool:
        """Whether the kind applies to ``normal`` groups."""
        return self.kind in EUCLIDEAN_FLOWS

    @property
    def spherical(self) -> bool:
        """Whether the kind applies to sphere groups."""
        return self.kind in SPHERE_FLOWS

    def __str__(self) -> str:
        return f"{self.kind}:{self.steps}"


@dataclass(frozen=True)
class FlowSpec:
    """A parsed flow spec: its terms, in order, and the flow type."""

    terms: tuple[FlowTerm, ...]
    flow_type: str = "static"

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("a flow spec needs at least one term")
        if self.flow_type not in FLOW_TYPES:
            raise ValueError(f"flow type must be one of {FLOW_TYPES}, got {self.flow_type!r}")

    @property
    def amortized(self) -> bool:
        return self.flow_type == "amortized"

    def euclidean_terms(self) -> tuple[FlowTerm, ...]:
        """The terms that apply to ``normal`` groups."""
        return tuple(t for t in self.terms if t.euclidean)

    def sphere_terms(self) -> tuple[FlowTerm, ...]:
        """The terms that apply to sphere groups."""
        return tuple(t for t in self.terms if t.spherical)

    def has_kind(self, kind: str) -> bool:
        """Whether any term is of flow kind ``kind``."""
        return any(t.kind == kind for t in self.terms)

    @property
    def num_steps(self) -> int:
        return sum(t.steps for t in self.terms)

    def __str__(self) -> str:
        return "+".join(str(t) for t in self.terms)


def parse_flow_spec(spec: str | FlowSpec | None, flow_type: str | None = None) -> FlowSpec | None:
    """Parse a flow spec string (``None``, ``""`` or ``"none"``: no flow) with a flow type.

    ``flow_type`` (``"static"`` or ``"amortized"``) overrides the type of a given :class:`FlowSpec`;
    a string spec gets ``"static"`` when it is ``None``.
    """
    if flow_type is not None and flow_type not in FLOW_TYPES:
        raise ValueError(f"flow type must be one of {FLOW_TYPES}, got {flow_type!r}")
    if spec is None:
        return None
    if isinstance(spec, FlowSpec):
        return spec if flow_type is None else FlowSpec(spec.terms, flow_type)
    if not isinstance(spec, str):
        raise TypeError(f"a flow spec must be a string or FlowSpec, got {type(spec).__name__}")
    text = re.sub(r"\s+", "", spec).lower()
    if text in ("", "none"):
        return None
    terms = []
    for part in text.split("+"):
        match = _TERM.fullmatch(part)
        if match is None:
            raise _error(spec, f"cannot read the term {part!r}")
        kind, steps = match.group(1), int(match.group(2))
        if kind not in FLOW_KINDS:
            raise _error(spec, f"unknown flow kind {kind!r} (known: {', '.join(FLOW_KINDS)})")
        if steps < 1:
            raise _error(spec, f"the number of steps of {kind!r} must be positive")
        terms.append(FlowTerm(kind, steps))
    return FlowSpec(tuple(terms), flow_type or "static")

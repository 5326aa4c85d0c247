"""Normalizing flows for VAE posteriors: Euclidean (planar, radial, Householder, NICE) and spherical
(Householder, Möbius, mixtures of Möbius dilations), static or amortized. See
:mod:`pyro_svae.flows.spec` for the spec strings and :class:`pyro_svae.models.flow_vae.FlowVAE` for
the model."""

from .euclidean import (
    AdditiveCoupling,
    BoundedPlanar,
    ConditionalBoundedPlanar,
    ConditionedBoundedPlanar,
    DiagonalScaling,
    EuclideanFlow,
    LinearHypernet,
    bounded_u_hat,
    identity_planar_parameters,
)
from .spec import (
    EUCLIDEAN_FLOWS,
    FLOW_KINDS,
    FLOW_TYPES,
    SPHERE_FLOWS,
    FlowSpec,
    FlowTerm,
    parse_flow_spec,
)
from .sphere import MobiusMixture, MobiusTransform, SphereFlow, SphereHouseholder, mobius_point

__all__ = [
    "EUCLIDEAN_FLOWS",
    "FLOW_KINDS",
    "FLOW_TYPES",
    "SPHERE_FLOWS",
    "AdditiveCoupling",
    "BoundedPlanar",
    "ConditionalBoundedPlanar",
    "ConditionedBoundedPlanar",
    "DiagonalScaling",
    "EuclideanFlow",
    "FlowSpec",
    "FlowTerm",
    "LinearHypernet",
    "MobiusMixture",
    "MobiusTransform",
    "SphereFlow",
    "SphereHouseholder",
    "bounded_u_hat",
    "identity_planar_parameters",
    "mobius_point",
    "parse_flow_spec",
]

"""The distribution registry: one entry per (class, configuration), feeding the generic tests.

A new sphere distribution is covered by every generic test (shapes, expand, support, validation, pickling,
entropy, mean, KL, Pyro integration) by adding one :class:`Case` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn.functional import normalize

from pyro_svae.distributions import (
    HypersphericalUniform,
    PowerSpherical,
    SphericalDiffusion,
    VonMisesFisher,
)


@dataclass(frozen=True)
class Case:
    """A distribution family with parameters drawn for a given batch shape and dtype."""

    name: str
    dim: int
    make: Callable[[tuple, torch.dtype], torch.distributions.Distribution]
    #: parameters, for validation tests: name -> (valid tensor factory); empty for parameter-free ones
    params: tuple[str, ...] = field(default=())


def _loc(batch_shape: tuple, dim: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(*batch_shape, dim, generator=g, dtype=dtype), dim=-1)


def _concentration(batch_shape: tuple, dtype: torch.dtype, low: float, high: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return low + (high - low) * torch.rand(batch_shape, generator=g, dtype=dtype)


def _vmf(dim: int, low: float, high: float):
    def make(batch_shape, dtype):
        return VonMisesFisher(
            _loc(batch_shape, dim, dtype), _concentration(batch_shape, dtype, low, high)
        )

    return make


def _ps(dim: int, low: float, high: float):
    def make(batch_shape, dtype):
        return PowerSpherical(
            _loc(batch_shape, dim, dtype), _concentration(batch_shape, dtype, low, high)
        )

    return make


def _diffusion(dim: int, low: float, high: float, steps: int | None = None):
    def make(batch_shape, dtype):
        loc = _loc(batch_shape, dim, dtype)
        return SphericalDiffusion(loc, _concentration(batch_shape, dtype, low, high), steps=steps)

    return make


def _uniform(dim: int):
    def make(batch_shape, dtype):
        return HypersphericalUniform(dim, batch_shape, dtype=dtype)

    return make


CASES = [
    Case("vmf-S1", 2, _vmf(2, 0.5, 5.0), ("loc", "concentration")),
    Case("vmf-S2", 3, _vmf(3, 0.5, 5.0), ("loc", "concentration")),
    Case("vmf-S4", 5, _vmf(5, 0.5, 5.0), ("loc", "concentration")),
    Case("vmf-S9-concentrated", 10, _vmf(10, 20.0, 50.0), ("loc", "concentration")),
    Case("ps-S1", 2, _ps(2, 0.5, 5.0), ("loc", "concentration")),
    Case("ps-S2", 3, _ps(3, 0.5, 5.0), ("loc", "concentration")),
    Case("ps-S9", 10, _ps(10, 0.5, 20.0), ("loc", "concentration")),
    Case("diffusion-S1", 2, _diffusion(2, 0.05, 1.0), ("loc", "time")),
    Case("diffusion-S2", 3, _diffusion(3, 0.05, 1.0), ("loc", "time")),
    Case("diffusion-S9", 10, _diffusion(10, 0.01, 0.2), ("loc", "time")),
    Case("uniform-S2", 3, _uniform(3)),
    Case("uniform-S9", 10, _uniform(10)),
]

CASE_IDS = [case.name for case in CASES]

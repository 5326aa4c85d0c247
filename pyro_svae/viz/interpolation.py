r"""Geodesic interpolation on spheres and products of spheres, and decoded interpolation strips.

On :math:`S^{d-1}` the geodesic from :math:`a` to :math:`b` at angle
:math:`\omega = \angle(a, b)` is

.. math:: \gamma(t) = \cos(t\omega)\, a + \sin(t\omega)\, v, \qquad
          v = \frac{b - (a \cdot b)\, a}{\lVert b - (a \cdot b)\, a \rVert},

which has constant angular speed :math:`\omega` (spherical linear interpolation, "slerp").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pyro_svae.latent_spec import LatentSpec, parse_latent_spec

from .images import save_image_grid

if TYPE_CHECKING:
    from pyro_svae.models.vae import VAE

__all__ = [
    "decode_mean",
    "interpolate_latents",
    "lerp",
    "posterior_points",
    "save_interpolations",
    "slerp",
]

#: angles below this (radians) use the normalised linear interpolation; within this of π a pair
#: counts as antipodal (the computation runs in float64)
_ANGLE_TOL = math.sqrt(torch.finfo(torch.float64).eps)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (both endpoints included), got {steps!r}")
    return steps


def _pair(a: Tensor, b: Tensor, what: str) -> tuple[Tensor, Tensor, torch.dtype]:
    """Broadcast ``a`` and ``b`` over their leading dims; return them and the result dtype."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.dim() == 0 or b.dim() == 0 or a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{what} needs two points of the same last dimension, got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    try:
        a, b = torch.broadcast_tensors(a, b)
    except RuntimeError as err:
        raise ValueError(
            f"{what}: the leading (batch) dims of shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)} do not broadcast"
        ) from err
    return a, b, dtype


def lerp(a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Linear interpolation from ``a`` to ``b`` (``(..., d)``, broadcast over leading dims) at
    ``steps`` equally spaced times in [0, 1]; shape ``(..., steps, d)``, endpoints exact."""
    steps = _check_steps(steps)
    a, b, dtype = _pair(a, b, "lerp")
    a, b = a.to(dtype), b.to(dtype)
    t = torch.linspace(0, 1, steps, dtype=dtype, device=a.device).unsqueeze(-1)
    return (1 - t) * a.unsqueeze(-2) + t * b.unsqueeze(-2)


def slerp(a: Tensor, b: Tensor, steps: int) -> Tensor:
    """Geodesic interpolation on the unit sphere from ``a`` to ``b`` at ``steps`` equally spaced times.

    :param a: start points ``(..., d)``, ``d >= 2``; leading dims broadcast against ``b``'s. Points
        off the unit sphere ``S^{d-1}`` are projected onto it (divided by their norm; a zero vector
        is an error); points whose norm is 1 up to rounding (4 ulp of their dtype) are returned as
        given at the ends, while the interior is computed from their exact float64 normalisation.
    :param b: end points ``(..., d)``.
    :param int steps: number of points, ``>= 2``, both endpoints included.
    :returns: ``(..., steps, d)`` unit vectors at constant angular speed; the first and last are
        exactly ``a`` and ``b`` (after the projection, if any).

    Nearly equal points (angle below ~1.5e-8) are joined by normalised linear interpolation. For
    antipodal points (``b = -a`` up to ~1.5e-8 rad) every great circle through ``a`` is a geodesic;
    the one chosen is deterministic: it leaves ``a`` towards ``e_k - a_k a`` (normalised), where
    ``e_k`` is the basis vector of the coordinate of ``a`` smallest in absolute value (the first
    such). Computed in float64, returned in the inputs' (promoted floating) dtype.
    """
    steps = _check_steps(steps)
    a, b, dtype = _pair(a, b, "slerp")
    d = a.shape[-1]
    if d < 2:
        raise ValueError(
            f"slerp needs points on a sphere S^(d-1) in R^d with d >= 2 (the last dimension), got d = {d}"
        )
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    if not (torch.isfinite(na).all() and torch.isfinite(nb).all()):
        raise ValueError("slerp got non-finite points")
    if (na == 0).any() or (nb == 0).any():
        raise ValueError("slerp got a zero vector, which has no direction on the sphere")
    # unit vectors up to rounding in their own dtype are returned as given (exact endpoints), but the
    # interior is computed from the exactly normalised float64 points: near b = -a, the tangent
    # b - (a.b) a is tiny and a norm off 1 by one float32 ulp would tilt it by O(ulp / angle)
    slack = 4 * torch.finfo(dtype).eps
    end_a = a64 / torch.where((na - 1).abs() <= slack, torch.ones_like(na), na)
    end_b = b64 / torch.where((nb - 1).abs() <= slack, torch.ones_like(nb), nb)
    a64, b64 = a64 / na, b64 / nb
    # stable angle for all of [0, π]: ω = 2 atan2(|a - b|, |a + b|)
    omega = 2 * torch.atan2(
        (a64 - b64).norm(dim=-1, keepdim=True), (a64 + b64).norm(dim=-1, keepdim=True)
    )
    tangent = b64 - (a64 * b64).sum(-1, keepdim=True) * a64
    tangent = tangent / tangent.norm(dim=-1, keepdim=True).clamp_min(
        torch.finfo(torch.float64).tiny
    )
    # antipodal pairs: a fixed great circle through a
    k = a64.abs().argmin(dim=-1, keepdim=True)
    basis = torch.zeros_like(a64).scatter_(-1, k, 1.0)
    fixed = basis - a64.gather(-1, k) * a64
    fixed = fixed / fixed.norm(dim=-1, keepdim=True)
    antipodal = (math.pi - omega) < _ANGLE_TOL
    tangent = torch.where(antipodal, fixed, tangent)
    omega = torch.where(antipodal, torch.full_like(omega, math.pi), omega)

    t = torch.linspace(0, 1, steps, dtype=torch.float64, device=a.device).unsqueeze(-1)
    A, B, V, W = (x.unsqueeze(-2) for x in (a64, b64, tangent, omega))  # t: (steps, 1)
    path = torch.cos(t * W) * A + torch.sin(t * W) * V
    near = (1 - t) * A + t * B
    near = near / near.norm(dim=-1, keepdim=True)
    path = torch.where(W < _ANGLE_TOL, near, path)
    path = path / path.norm(dim=-1, keepdim=True)
    return torch.cat([end_a.unsqueeze(-2), path[..., 1:-1, :], end_b.unsqueeze(-2)], dim=-2).to(
        dtype
    )


def _factor_layout(spec: str | LatentSpec | Sequence[int]) -> list[tuple[int, bool]]:
    """``(ambient_dim, is_sphere)`` per factor."""
    if isinstance(spec, str | LatentSpec):
        return [(f.ambient_dim, f.is_sphere) for f in parse_latent_spec(spec).factors]
    dims = [int(m) for m in spec]
    if not dims or min(dims) < 2:
        raise ValueError(f"sphere factor dims must be ambient dimensions >= 2, got {list(spec)}")
    return [(m, True) for m in dims]


def interpolate_latents(
    a: Tensor, b: Tensor, steps: int, spec: str | LatentSpec | Sequence[int]
) -> Tensor:
    """Interpolate concatenated latents factor by factor: :func:`slerp` on each sphere, :func:`lerp`
    on the Euclidean (``normal``) factor.

    :param a: start latents ``(..., D)`` with ``D`` the spec's ambient dimension; leading dims
        broadcast against ``b``'s.
    :param b: end latents ``(..., D)``.
    :param int steps: number of points, ``>= 2``.
    :param spec: a latent spec (``"vmf:2,1+normal:3"``) or the ambient dims of a product of spheres
        (``(3, 2)`` for ``S^2 x S^1``, as :class:`~pyro_svae.distributions.ProductSphere` takes them).
    :returns: ``(..., steps, D)``.
    """
    layout = _factor_layout(spec)
    total = sum(m for m, _ in layout)
    a, b, _ = _pair(a, b, "interpolate_latents")
    if a.shape[-1] != total:
        raise ValueError(
            f"latents of {spec!s} must have last dimension {total} (the sum of the factors' "
            f"ambient dimensions), got {a.shape[-1]}"
        )
    parts, start = [], 0
    for m, sphere in layout:
        piece = slice(start, start + m)
        parts.append((slerp if sphere else lerp)(a[..., piece], b[..., piece], steps))
        start += m
    return torch.cat(parts, dim=-1)


def _device(vae: VAE) -> torch.device:
    return next(vae.parameters()).device


@torch.no_grad()
def posterior_points(vae: VAE, x: Tensor, *, batch_size: int = 500) -> list[Tensor]:
    """Per latent factor, the posterior mode direction (spheres) or mean (Gaussian) of ``x``, as
    ``(N, ambient_dim)`` CPU tensors (see ``VAE.posterior_mean_features``)."""
    device = _device(vae)
    chunks = [
        vae.posterior_mean_features(x[start : start + batch_size].to(device))
        for start in range(0, x.shape[0], batch_size)
    ]
    return [torch.cat(factor).cpu() for factor in zip(*chunks, strict=True)]


@torch.no_grad()
def decode_mean(vae: VAE, z: Tensor) -> Tensor:
    """Mean images ``(..., data_dim)`` decoded from latents ``z (..., ambient_dim)``, on the CPU."""
    flat = z.reshape(-1, z.shape[-1]).to(device=_device(vae), dtype=next(vae.parameters()).dtype)
    mean = vae.likelihood_dist(vae.decode(flat)).base_dist.mean
    return mean.reshape(*z.shape[:-1], mean.shape[-1]).cpu()


def save_interpolations(
    vae: VAE,
    x_a: Tensor,
    x_b: Tensor,
    path: str | Path,
    steps: int = 10,
    *,
    image_shape: Sequence[int] | None = None,
    with_inputs: bool = True,
    title: str | None = None,
) -> Path:
    """Decode latent interpolations between pairs of data points and save them as image strips.

    Each pair is encoded to its posterior modes (spheres) / means (Gaussian), interpolated factor by
    factor with :func:`interpolate_latents`, and decoded to mean images: one row per pair.

    :param vae: a :class:`~pyro_svae.models.VAE` (or ``FlowVAE``).
    :param x_a: first data points, ``(data_dim,)`` for one pair or ``(P, data_dim)`` for ``P`` rows.
    :param x_b: second data points, same shape as ``x_a``.
    :param path: image file to write.
    :param int steps: decoded images per row, ``>= 2``.
    :param image_shape: ``(C, H, W)``; defaults to ``vae.image_shape``.
    :param bool with_inputs: also show ``x_a`` and ``x_b`` at the ends of each row.
    """
    steps = _check_steps(steps)
    shape = tuple(image_shape or vae.image_shape or ())
    if len(shape) != 3:
        raise ValueError(
            "save_interpolations needs image_shape (C, H, W): pass it or set vae.image_shape"
        )
    x_a, x_b = torch.as_tensor(x_a), torch.as_tensor(x_b)
    x_a, x_b = (x.unsqueeze(0) if x.dim() == 1 else x for x in (x_a, x_b))
    if x_a.shape != x_b.shape or x_a.dim() != 2 or x_a.shape[-1] != vae.data_dim:
        raise ValueError(
            f"x_a and x_b must both have shape (P, {vae.data_dim}) or ({vae.data_dim},), got "
            f"{tuple(x_a.shape)} and {tuple(x_b.shape)}"
        )
    z_a = torch.cat(posterior_points(vae, x_a), dim=-1)
    z_b = torch.cat(posterior_points(vae, x_b), dim=-1)
    images = decode_mean(vae, interpolate_latents(z_a, z_b, steps, vae.spec))  # (P, steps, D)
    if with_inputs:
        ends = [x.detach().float().cpu().unsqueeze(1) for x in (x_a, x_b)]
        images = torch.cat([ends[0], images.float(), ends[1]], dim=1)
    return save_image_grid(
        images.reshape(-1, images.shape[-1]), shape, path, title=title, ncol=images.shape[1]
    )

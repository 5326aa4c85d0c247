"""Shape handling shared by the sphere distributions."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = ["broadcast_loc_and_scalar", "check_event_dim"]


def broadcast_loc_and_scalar(loc: Tensor, scalar, name: str) -> tuple[Tensor, Tensor]:
    """Broadcast a mean direction ``loc`` (``batch_shape + (m,)``) with a per-direction parameter.

    ``scalar`` (a concentration or a diffusion time) must have a shape broadcastable with
    ``loc.shape[:-1]``; it has no trailing singleton dimension. The mistake of passing
    ``loc.shape[:-1] + (1,)`` (which would silently broadcast a batch of ``B`` into ``B x B``) is caught.

    :returns: ``(loc, scalar)`` expanded to ``batch_shape + (m,)`` and ``batch_shape``.
    :raises ValueError: on a non-tensor ``loc``, a scalar ``loc``, ``m < 2``, or incompatible shapes.
    """
    if not isinstance(loc, Tensor):
        raise ValueError(f"loc must be a torch.Tensor of shape batch_shape + (m,), got {type(loc)}")
    if loc.dim() < 1 or loc.size(-1) < 2:
        raise ValueError(
            f"loc must have shape batch_shape + (m,) with m >= 2 (the sphere S^(m-1) in R^m), "
            f"got shape {tuple(loc.shape)}"
        )
    if isinstance(scalar, numbers.Number):
        scalar = torch.tensor(float(scalar), dtype=loc.dtype, device=loc.device)
    elif not isinstance(scalar, Tensor):
        raise ValueError(f"{name} must be a number or a torch.Tensor, got {type(scalar)}")
    batch = loc.shape[:-1]
    if scalar.dim() > 0 and scalar.shape == (*batch, 1) and batch[-1:] != (1,):
        raise ValueError(
            f"{name} must have shape batch_shape = {tuple(batch)} (no trailing singleton), "
            f"got {tuple(scalar.shape)}; use {name}.squeeze(-1)"
        )
    try:
        batch_shape = torch.broadcast_shapes(batch, scalar.shape)
    except RuntimeError as error:
        raise ValueError(
            f"{name} of shape {tuple(scalar.shape)} does not broadcast with loc's batch shape "
            f"{tuple(batch)} (loc has shape {tuple(loc.shape)})"
        ) from error
    if scalar.dtype != loc.dtype:
        scalar = scalar.to(loc.dtype)
    return loc.expand(batch_shape + loc.shape[-1:]), scalar.expand(batch_shape)


def check_event_dim(value: Tensor, dim: int, name: str = "value") -> None:
    """Raise ValueError unless ``value`` has trailing dimension ``dim``."""
    if value.dim() < 1 or value.size(-1) != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}) (points of S^{dim - 1} in R^{dim}), "
            f"got {tuple(value.shape)}"
        )

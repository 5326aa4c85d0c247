"""Rotating samples drawn around a pole onto an arbitrary mean direction.

Samplers for rotationally symmetric distributions on :math:`S^{m-1}` draw the cosine
:math:`w = \\mu^\\top z` and a uniform tangent direction :math:`v \\in S^{m-2}`, build
:math:`y = w\\,p + \\sqrt{1-w^2}\\,(0, v)` around a pole :math:`p = \\pm e_1`, and map ``y`` with an
orthogonal matrix that sends ``p`` to ``loc``.

The usual choice, the Householder reflection with :math:`u \\propto e_1 - \\mu`, is undefined at
:math:`\\mu = e_1` and has unbounded gradients next to it (public implementations add an epsilon, which
moves samples off the sphere). Here the pole is chosen per batch element as the one *farther* from
``loc``: :math:`p = -\\operatorname{sign}(\\mu_1)\\,e_1`, so :math:`\\|p - \\mu\\| \\ge \\sqrt 2` and the
reflection is smooth, exactly orthogonal and has gradients bounded by a constant everywhere. Both poles
give the same distribution, so switching pole where :math:`\\mu_1` changes sign is harmless.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rotate_from_pole", "sample_tangent_directions"]


def sample_tangent_directions(shape: torch.Size, dim: int, like: Tensor) -> Tensor:
    """Uniform unit vectors of :math:`S^{m-2} \\subset \\mathbb{R}^{m-1}`, shape ``shape + (dim - 1,)``.

    For ``dim = 2`` these are random signs. Created on ``like``'s device and dtype.
    """
    if dim == 2:
        sign = torch.randint(0, 2, (*shape, 1), device=like.device).to(like.dtype)
        return 2.0 * sign - 1.0
    v = torch.randn((*shape, dim - 1), dtype=like.dtype, device=like.device)
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def rotate_from_pole(loc: Tensor, w: Tensor, sin: Tensor, tangent: Tensor) -> Tensor:
    """Return :math:`w\\,\\mu + \\sin\\cdot Q_\\mu (0, v)` for an orthogonal :math:`Q_\\mu` with
    :math:`Q_\\mu p = \\mu`.

    :param loc: unit mean directions, shape ``batch_shape + (m,)``.
    :param w: cosines :math:`\\mu^\\top z`, shape broadcastable to ``sample_shape + batch_shape``.
    :param sin: :math:`\\sqrt{1 - w^2}`, same shape as ``w`` (passed in so callers can compute it
        without cancellation from ``1 - w``).
    :param tangent: unit vectors of :math:`S^{m-2}`, shape ``sample_shape + batch_shape + (m - 1,)``.
    :returns: points of :math:`S^{m-1}`, shape ``sample_shape + batch_shape + (m,)``.
    """
    loc0 = loc[..., :1]
    # Pole p = s e1 on the far side of loc; u = (p - loc) / |p - loc| with |p - loc| >= sqrt(2).
    s = torch.where(loc0 >= 0, -torch.ones_like(loc0), torch.ones_like(loc0))
    u = torch.cat([s - loc0, -loc[..., 1:]], dim=-1)
    u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    y = torch.cat(
        [(s * w.unsqueeze(-1)).expand((*tangent.shape[:-1], 1)), sin.unsqueeze(-1) * tangent], -1
    )
    return y - 2.0 * u * (u * y).sum(-1, keepdim=True)

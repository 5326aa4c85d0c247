"""Geometry of the unit sphere S^{m-1} ⊂ R^m."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .bessel import ive_ratio, log_ive

__all__ = ["log_sphere_area", "log_vmf_partition", "safe_normalize", "vmf_mean_resultant"]


def _check_dim(dim: int) -> None:
    if isinstance(dim, bool) or int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer (the ambient dimension m), got {dim!r}")


def log_sphere_area(dim: int) -> float:
    r"""Log surface area of the unit sphere :math:`S^{m-1} \subset \mathbb{R}^m`, with ``dim = m``.

    .. math:: \log |S^{m-1}| = \log 2 + \tfrac{m}{2}\log\pi - \log\Gamma(\tfrac{m}{2})

    Computed in Python double precision (``math.lgamma``), so the value is exact to float64 rounding for
    every ``dim`` (checked against mpmath up to ``dim = 1e5``); callers cast it once to their dtype.
    """
    _check_dim(dim)
    m = int(dim)
    return math.log(2.0) + 0.5 * m * math.log(math.pi) - math.lgamma(0.5 * m)


#: Below ``kappa^2 / 4 <= m / 2`` the hypergeometric series of :func:`log_vmf_partition` is used; its
#: truncation error after this many terms is below 1 / 24! ≈ 1.6e-24 relative.
_SERIES_TERMS = 24


def _log_partition_series(v: float, kappa: Tensor) -> Tensor:
    """log 0F1(; v + 1; kappa^2 / 4) by its power series (float64); accurate where kappa^2/4 <= v + 1."""
    x = 0.25 * kappa * kappa
    term = torch.ones_like(kappa)
    total = torch.zeros_like(kappa)
    for k in range(1, _SERIES_TERMS + 1):
        term = term * x / (k * (v + k))
        total = total + term
    return torch.log1p(total)


class _LogVMFPartition(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: Tensor, dim: int, scaled: bool) -> Tensor:
        v = 0.5 * dim - 1.0
        k64 = kappa.to(torch.float64)
        series = k64 * k64 <= 4.0 * (v + 1.0)
        # log Γ(v+1) + log I_v(κ) - v log(κ/2) - [κ if scaled], written with the scaled Bessel function.
        safe = torch.where(series, torch.ones_like(k64), k64)
        bessel = log_ive(v, safe) + math.lgamma(v + 1.0)
        bessel = bessel - v * torch.log(0.5 * safe)
        if not scaled:
            bessel = bessel + safe
        small = _log_partition_series(v, torch.where(series, k64, 0.0))
        if scaled:
            small = small - k64
        out = torch.where(series, small, bessel)
        ctx.save_for_backward(kappa)
        ctx.dim, ctx.scaled = dim, scaled
        return out.to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (kappa,) = ctx.saved_tensors
        derivative = vmf_mean_resultant(ctx.dim, kappa)
        if ctx.scaled:
            derivative = derivative - 1.0
        return grad * derivative, None, None


def log_vmf_partition(dim: int, concentration: Tensor, *, scaled: bool = False) -> Tensor:
    r"""Log partition function of the von Mises–Fisher distribution relative to the uniform measure.

    .. math:: \ell_m(\kappa) = \log \int_{S^{m-1}} e^{\kappa \mu^\top z}\, dU(z)
              = \log {}_0F_1(; \tfrac m2; \tfrac{\kappa^2}{4})
              = \log\Gamma(\tfrac m2) + \log I_{m/2-1}(\kappa) - (\tfrac m2 - 1)\log\tfrac{\kappa}{2}

    so that :math:`\log p_{\mathrm{vMF}}(z) = \kappa\mu^\top z - \ell_m(\kappa) - \log|S^{m-1}|`. It is
    :math:`O(\kappa^2)` as :math:`\kappa \to 0` (the uniform limit) and is computed there from its power
    series, without the cancellation of the Bessel form; the derivative is
    :math:`\ell_m'(\kappa) = A_m(\kappa)` (:func:`vmf_mean_resultant`), implemented as a custom backward.
    With ``scaled=True`` it returns :math:`\ell_m(\kappa) - \kappa` without forming
    :math:`\ell_m(\kappa)` first, which keeps full precision for large :math:`\kappa`.
    Evaluated in float64 and returned in ``concentration``'s dtype.
    """
    _check_dim(dim)
    return _LogVMFPartition.apply(concentration, int(dim), bool(scaled))


def vmf_mean_resultant(dim: int, concentration: Tensor) -> Tensor:
    r"""Mean resultant length :math:`A_m(\kappa) = I_{m/2}(\kappa) / I_{m/2-1}(\kappa) = \mathbb{E}[\mu^\top z]`.

    Differentiable in ``concentration`` (:math:`A_m' = 1 - A_m^2 - (m-1) A_m / \kappa`).
    """
    _check_dim(dim)
    return ive_ratio(0.5 * dim - 1.0, concentration)


def safe_normalize(x: Tensor) -> Tensor:
    r"""Project ``x`` onto the unit sphere along its last dimension, with finite values and gradients at 0.

    Vectors with :math:`\|x\| < \epsilon` (:math:`\epsilon` the dtype's machine epsilon) are first moved
    by :math:`\epsilon e_1`, so the zero vector maps to :math:`e_1` and every gradient is finite (bounded by
    :math:`1/\epsilon` times the incoming gradient); elsewhere this is exactly :math:`x / \|x\|`.
    (``pyro.ops.tensor_utils.safe_normalize`` returns :math:`e_1` at zero too, but its gradient there is
    not finite.)
    """
    eps = torch.finfo(x.dtype).eps
    square_norm = (x * x).sum(-1, keepdim=True)
    nudge = torch.zeros_like(x)
    nudge[..., 0] = eps
    x = torch.where(square_norm < eps * eps, x + nudge, x)
    return x / torch.sqrt((x * x).sum(-1, keepdim=True))

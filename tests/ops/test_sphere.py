"""Sphere geometry ops against mpmath, and the vMF log partition function's gradients."""

from __future__ import annotations

import mpmath
import pytest
import torch

from pyro_svae.ops import log_sphere_area, log_vmf_partition, safe_normalize, vmf_mean_resultant


@pytest.mark.parametrize("dim", [1, 2, 3, 10, 1000, 100000])
def test_log_sphere_area(dim):
    mpmath.mp.dps = 40
    expected = (
        mpmath.log(2)
        + mpmath.mpf(dim) / 2 * mpmath.log(mpmath.pi)
        - mpmath.loggamma(mpmath.mpf(dim) / 2)
    )
    assert log_sphere_area(dim) == pytest.approx(float(expected), rel=1e-15)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "3"])
def test_log_sphere_area_rejects_bad_dim(bad):
    with pytest.raises((ValueError, TypeError)):
        log_sphere_area(bad)


def _mp_log_partition(dim: int, kappa: float):
    nu, k = mpmath.mpf(dim) / 2 - 1, mpmath.mpf(kappa)
    return mpmath.loggamma(nu + 1) + mpmath.log(mpmath.besseli(nu, k)) - nu * mpmath.log(k / 2)


@pytest.mark.parametrize("dim", [2, 3, 5, 64, 2048])
@pytest.mark.parametrize("kappa", [1e-8, 1e-2, 1.9, 2.1, 30.0, 1e3, 1e7])
def test_log_vmf_partition_against_mpmath(dim, kappa):
    mpmath.mp.dps = 40
    expected = _mp_log_partition(dim, kappa)
    k64 = torch.tensor(kappa, dtype=torch.float64)
    assert log_vmf_partition(dim, k64).item() == pytest.approx(float(expected), rel=1e-12)
    scaled = log_vmf_partition(dim, k64, scaled=True).item()
    assert scaled == pytest.approx(float(expected - kappa), rel=1e-12, abs=1e-300)
    k32 = torch.tensor(kappa, dtype=torch.float32)
    assert log_vmf_partition(dim, k32).item() == pytest.approx(float(expected), rel=1e-6, abs=1e-38)


@pytest.mark.parametrize("dim", [2, 3, 10, 300])
@pytest.mark.parametrize("scaled", [False, True])
def test_log_vmf_partition_gradcheck(dim, scaled):
    kappa = torch.tensor([1e-3, 0.7, 3.0, 25.0, 900.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: log_vmf_partition(dim, k, scaled=scaled), (kappa,))
    assert torch.autograd.gradgradcheck(
        lambda k: log_vmf_partition(dim, k, scaled=scaled), (kappa,)
    )


def test_mean_resultant_small_and_large_kappa():
    for dim in (3, 10, 100):
        small = vmf_mean_resultant(dim, torch.tensor(1e-8, dtype=torch.float64)).item()
        assert small == pytest.approx(1e-8 / dim, rel=1e-10)
        large = vmf_mean_resultant(dim, torch.tensor(1e7, dtype=torch.float64)).item()
        assert 1 - large == pytest.approx((dim - 1) / 2e7, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safe_normalize(dtype):
    x = torch.zeros(3, 5, dtype=dtype, requires_grad=True)
    y = safe_normalize(x)
    torch.testing.assert_close(y.detach(), torch.eye(5, dtype=dtype)[0].expand(3, 5))
    (y * torch.randn(3, 5, dtype=dtype)).sum().backward()
    assert torch.isfinite(x.grad).all()
    v = torch.randn(100, 5, dtype=dtype) * torch.logspace(-3, 3, 100, dtype=dtype).unsqueeze(-1)
    torch.testing.assert_close(safe_normalize(v), torch.nn.functional.normalize(v, dim=-1))

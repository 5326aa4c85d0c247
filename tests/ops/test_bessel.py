"""Tests of ``pyro_svae.ops.bessel``: accuracy against mpmath (40 significant digits) over
v in [0, 2000] x z in [1e-8, 1e7], edge cases, shapes/dtypes/devices, and gradients."""

from __future__ import annotations

import functools
import math

import mpmath as mp
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

from pyro_svae.ops import ive_ratio, log_iv, log_ive

MP_DPS = 40

#: Orders named in the accuracy contract, then orders that are not half-integers (including both
#: sides of the internal switch between recurrence and direct Debye expansion, at order 20).
CONTRACT_ORDERS = [0.0, 0.5, 1.0, 1.5, 4.0, 49.5, 50.0, 500.0, 1000.0, 2000.0]
OTHER_ORDERS = [0.01, 0.3, 2.7, 13.1, 19.9, 20.0, 20.5, 33.3, 123.456, 1234.567]
ALL_ORDERS = CONTRACT_ORDERS + OTHER_ORDERS
#: 1e-8 ... 1e7, four points per decade.
ARGS = [10.0 ** (e / 4) for e in range(-32, 29)]
#: The float64 contract is 1e-10 (relative for the ratio and where |log_ive| >= 1, absolute below);
#: the implementation measures below 5e-14, so the tests hold it to a tighter bound than promised.
TOL64 = 1e-12


# --------------------------------------------------------------------------------------------------
# mpmath reference
# --------------------------------------------------------------------------------------------------


def _hankel_log_ive(v: mp.mpf, z: mp.mpf, dps: int) -> mp.mpf:
    """log(I_v(z) e^{-z}) by the large-argument (Hankel) series, summed in mpmath at a precision
    raised until it beats the series' cancellation (see :func:`_mp_log_i` for where it is used)."""
    with mp.workdps(dps):
        v, z = mp.mpf(v), mp.mpf(z)
        term = total = peak = mp.mpf(1)
        tiny = mp.mpf(10) ** (-dps)
        k = 0
        while True:
            k += 1
            factor = -(4 * v * v - (2 * k - 1) ** 2) / (8 * k * z)
            term *= factor
            total += term
            peak = max(peak, abs(term))
            # Past the largest term, |terms| decrease until k ~ 2z: stop once negligible.
            if term == 0 or (abs(factor) < 1 and abs(term) < tiny * abs(total)):
                break
        needed = int(mp.log10(peak) - mp.log10(abs(total) + mp.mpf(10) ** (-2 * dps))) + 45
        if needed > dps:
            return _hankel_log_ive(v, z, needed)
        return mp.log(total) - mp.log(2 * mp.pi * z) / 2


def _mp_log_i(v: mp.mpf, z: mp.mpf) -> mp.mpf:
    """log I_v(z): mpmath's ``besseli``, or the Hankel series where ``besseli`` struggles (large
    order and argument: slow, or gives up) and that series is exact to 40 digits and cheap: the
    omitted part is O(e^{-2z}), its smallest term (near k = v) is far below that for z > v, and its
    largest term, about e^{v^2/(2z)}, costs at most ~90 extra digits for z >= v^2/400."""
    if z >= max(v, v * v / 400, 1000):
        return _hankel_log_ive(v, z, mp.mp.dps + 10) + z
    try:
        return mp.log(mp.besseli(v, z))
    except mp.libmp.NoConvergence:
        return _hankel_log_ive(v, z, mp.mp.dps + 10) + z


@functools.cache
def reference(v: float, z: float) -> tuple[float, float]:
    """(log(I_v(z) e^{-z}), I_{v+1}(z) / I_v(z)) in ``MP_DPS`` digits, rounded to float64."""
    with mp.workdps(MP_DPS):
        mv, mz = mp.mpf(v), mp.mpf(z)
        log_i0 = _mp_log_i(mv, mz)
        log_i1 = _mp_log_i(mv + 1, mz)
        return float(log_i0 - mz), float(mp.exp(log_i1 - log_i0))


def test_reference_fallback_agrees_with_besseli() -> None:
    # The Hankel fallback against mpmath's own besseli (given enough terms) where both work.
    for v, z in [(1000.0, 17782.794100389227), (4.0, 1e4), (2000.0, 1e7), (2.5, 1e3 + 1)]:
        with mp.workdps(MP_DPS):
            direct = mp.log(mp.besseli(v, z, maxterms=10**6)) - z
            assert abs(_hankel_log_ive(mp.mpf(v), mp.mpf(z), 50) - direct) < 1e-30


def log_error(got: float, want: float) -> float:
    """Relative error where |want| >= 1, absolute error below (the accuracy contract)."""
    return abs(got - want) / max(1.0, abs(want))


def _check_grid(vs: list[float], zs: list[float], got_log, got_ratio, log_tol, ratio_tol) -> None:
    bad = []
    for i, v in enumerate(vs):
        for j, z in enumerate(zs):
            want_log, want_ratio = reference(v, z)
            el = log_error(float(got_log[i][j]), want_log)
            er = abs(float(got_ratio[i][j]) / want_ratio - 1.0)
            if not el <= log_tol:
                bad.append(f"log_ive({v}, {z}) = {float(got_log[i][j])!r}, mpmath {want_log!r}")
            if not er <= ratio_tol:
                bad.append(
                    f"ive_ratio({v}, {z}) = {float(got_ratio[i][j])!r}, mpmath {want_ratio!r}"
                )
    assert not bad, "\n".join(bad[:20])


# --------------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", ALL_ORDERS)
def test_float64_matches_mpmath(v: float) -> None:
    z = torch.tensor(ARGS, dtype=torch.float64)
    got_log, got_ratio = log_ive(v, z), ive_ratio(v, z)
    _check_grid([v], ARGS, [got_log.tolist()], [got_ratio.tolist()], TOL64, TOL64)


@pytest.mark.parametrize("orders", [CONTRACT_ORDERS, OTHER_ORDERS])
def test_float64_tensor_orders_match_mpmath(orders: list[float]) -> None:
    # One order per row, so the per-element (tensor order) code path is used.
    v = torch.tensor(orders, dtype=torch.float64).unsqueeze(-1)
    z = torch.tensor(ARGS, dtype=torch.float64)
    got_log, got_ratio = log_ive(v, z), ive_ratio(v, z)
    assert got_log.shape == got_ratio.shape == (len(orders), len(ARGS))
    _check_grid(orders, ARGS, got_log.tolist(), got_ratio.tolist(), TOL64, TOL64)


@pytest.mark.parametrize("v", [0.0, 0.5, 4.0, 19.9, 49.5, 500.0, 2000.0, 123.456])
def test_float32_matches_mpmath(v: float) -> None:
    z32 = torch.tensor(ARGS, dtype=torch.float32)
    zs = z32.tolist()  # the float32 inputs, exactly
    got_log, got_ratio = log_ive(v, z32), ive_ratio(v, z32)
    assert got_log.dtype == got_ratio.dtype == torch.float32
    bad = []
    for z, gl, gr in zip(zs, got_log.tolist(), got_ratio.tolist(), strict=True):
        want_log, want_ratio = reference(v, z)
        if not abs(gl / want_log - 1.0) <= 1e-5:
            bad.append(f"log_ive({v}, {z}) = {gl!r}, mpmath {want_log!r}")
        if not abs(gr / want_ratio - 1.0) <= 1e-5:
            bad.append(f"ive_ratio({v}, {z}) = {gr!r}, mpmath {want_ratio!r}")
    assert not bad, "\n".join(bad[:20])


@pytest.mark.parametrize("z", [1e-8, 1.0, 30.0, 100.0, 112.0])
def test_where_scipy_ive_underflows(z: float) -> None:
    special = pytest.importorskip("scipy.special")
    assert special.ive(500.0, z) == 0.0  # float64 underflow: log(0) would be -inf
    got = log_ive(500.0, torch.tensor(z, dtype=torch.float64)).item()
    want_log, want_ratio = reference(500.0, z)
    assert math.isfinite(got)
    assert want_log < -700.0
    assert abs(got / want_log - 1.0) <= 1e-12
    got_ratio = ive_ratio(500.0, torch.tensor(z, dtype=torch.float64)).item()
    assert abs(got_ratio / want_ratio - 1.0) <= 1e-12


@pytest.mark.parametrize("v", [0.0, 1.0, 7.5, 2000.0])
@pytest.mark.parametrize("z", [1e-12, 1e-100, 1e-300, 5e-324])
def test_below_contract_range_uses_small_argument_limit(v: float, z: float) -> None:
    # I_v(z) = (z/2)^v / Gamma(v+1) (1 + O(z^2)): log_ive and the ratio z / (2(v+1)) are exact here.
    t = torch.tensor(z, dtype=torch.float64)
    want = v * (math.log(z) - math.log(2)) - math.lgamma(v + 1) - z if v else -z
    got = log_ive(v, t).item()
    assert math.isfinite(got)
    assert abs(got - want) <= 1e-15 * max(1.0, abs(want))
    assert ive_ratio(v, t).item() == pytest.approx(z / (2 * (v + 1)), rel=1e-15, abs=0.0)


@pytest.mark.parametrize("v", [0.0, 3.5, 800.0])
@pytest.mark.parametrize("z", [1e10, 1e100, 1e200, 1e300])
def test_huge_argument_is_finite_and_asymptotic(v: float, z: float) -> None:
    # log(I_v(z) e^{-z}) = -log(2 pi z)/2 - (4v^2 - 1)/(8z) + O(z^-2); ratio = 1 - (2v+1)/(2z) + ...
    t = torch.tensor(z, dtype=torch.float64)
    want = -0.5 * math.log(2 * math.pi * z) - (4 * v * v - 1) / (8 * z)
    assert log_ive(v, t).item() == pytest.approx(want, rel=1e-14)
    assert ive_ratio(v, t).item() == pytest.approx(1.0 - (2 * v + 1) / (2 * z), rel=1e-15)


@pytest.mark.parametrize("v", [1e16, 1e20])
@pytest.mark.parametrize("x", [1e-6, 0.3, 1.0, 40.0, 1e5])
def test_huge_orders_follow_leading_debye_term(v: float, x: float) -> None:
    # For v this large, the first Debye term is exact to double precision (corrections are O(1/v)).
    z = v * x
    with mp.workdps(MP_DPS):
        mx = mp.mpf(z) / mp.mpf(v)
        s = mp.sqrt(1 + mx * mx)
        want_log = mp.mpf(v) * (s - mx - mp.asinh(1 / mx)) - mp.log(2 * mp.pi * mp.mpf(v) * s) / 2
        want_ratio = mx / (1 + s)
    t = torch.tensor(z, dtype=torch.float64)
    assert log_error(log_ive(v, t).item(), float(want_log)) <= 1e-14
    assert ive_ratio(v, t).item() == pytest.approx(float(want_ratio), rel=1e-14)


def test_log_iv_is_log_ive_plus_z() -> None:
    z = torch.tensor([1e-3, 1.0, 50.0, 3000.0], dtype=torch.float64)
    for v in (0.0, 2.5, 700.0):
        got = log_iv(v, z)
        for zi, gi in zip(z.tolist(), got.tolist(), strict=True):
            with mp.workdps(MP_DPS):
                want = float(_mp_log_i(mp.mpf(v), mp.mpf(zi)))
            assert log_error(gi, want) <= 1e-12


# --------------------------------------------------------------------------------------------------
# Edge cases, shapes, dtypes, devices
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_argument(dtype: torch.dtype) -> None:
    z = torch.zeros(3, dtype=dtype)
    assert torch.equal(log_ive(0.0, z), torch.zeros(3, dtype=dtype))
    assert torch.equal(log_ive(2.5, z), torch.full((3,), -math.inf, dtype=dtype))
    assert torch.equal(ive_ratio(0.0, z), torch.zeros(3, dtype=dtype))
    assert torch.equal(ive_ratio(2.5, z), torch.zeros(3, dtype=dtype))
    v = torch.tensor([0.0, 0.5, 40.0], dtype=dtype)  # tensor orders, one per element
    assert log_ive(v, z).tolist() == [0.0, -math.inf, -math.inf]
    assert ive_ratio(v, z).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("v", [0.0, 0.5, 3.0, 100.0])
def test_zero_argument_gradients(v: float) -> None:
    z = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    (g_ratio,) = torch.autograd.grad(ive_ratio(v, z).sum(), z)
    torch.testing.assert_close(
        g_ratio, torch.full_like(z, 1.0 / (2.0 * (v + 1.0))), rtol=1e-14, atol=0
    )
    (g_log,) = torch.autograd.grad(log_ive(v, z).sum(), z)
    assert torch.equal(g_log, torch.full_like(z, -1.0 if v == 0 else math.inf))


@pytest.mark.parametrize("z", [1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 0.03, 0.04, 0.1])
def test_order_zero_small_argument_keeps_relative_accuracy(z: float) -> None:
    # log(I_0(z) e^{-z}) = -z + z^2/4 - ... is tiny: stronger than the absolute contract.
    got = log_ive(0.0, torch.tensor(z, dtype=torch.float64)).item()
    assert abs(got / reference(0.0, z)[0] - 1.0) <= 1e-12


@pytest.mark.parametrize(
    ("v_shape", "z_shape", "out_shape"),
    [((), (5,), (5,)), ((3, 1), (4,), (3, 4)), ((2, 1, 1), (1, 3, 2), (2, 3, 2)), ((4,), (), (4,))],
)
def test_broadcasting(v_shape: tuple, z_shape: tuple, out_shape: tuple) -> None:
    gen = torch.Generator().manual_seed(0)
    v = (torch.rand(v_shape, generator=gen, dtype=torch.float64) * 60.0).round() / 2
    z = 10 ** (torch.rand(z_shape, generator=gen, dtype=torch.float64) * 6 - 3)
    for fn in (log_ive, ive_ratio, log_iv):
        got = fn(v, z)
        assert got.shape == out_shape
        vb, zb = torch.broadcast_tensors(v, z)
        want = torch.stack(
            [fn(float(a), b) for a, b in zip(vb.flatten(), zb.flatten(), strict=True)]
        )
        torch.testing.assert_close(got.flatten(), want, rtol=1e-13, atol=1e-13)


def test_python_number_and_uniform_tensor_orders_agree() -> None:
    z = torch.tensor([1e-3, 0.7, 20.0, 5e3], dtype=torch.float64)
    for v in (0.0, 4.0, 300.0):
        ref_log, ref_ratio = log_ive(v, z), ive_ratio(v, z)
        for order in (
            torch.tensor(v),
            torch.full_like(z, v),
            torch.tensor([v], dtype=torch.float32),
        ):
            torch.testing.assert_close(log_ive(order, z), ref_log, rtol=1e-14, atol=1e-14)
            torch.testing.assert_close(ive_ratio(order, z), ref_ratio, rtol=1e-14, atol=1e-14)
    # Python scalars for both: default dtype.
    assert log_ive(1.0, 2.0).dtype == torch.get_default_dtype()
    assert log_ive(1.0, 2.0).shape == ()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtype_is_preserved(dtype: torch.dtype) -> None:
    z = torch.tensor([0.0, 0.5, 30.0, 1e3], dtype=dtype)
    for fn in (log_ive, ive_ratio, log_iv):
        assert fn(2.0, z).dtype == dtype
        assert fn(torch.tensor([[1.0], [3.0]], dtype=dtype), z).dtype == dtype
    # Mixed tensor dtypes promote.
    assert log_ive(torch.tensor(1.0, dtype=torch.float64), z.float()).dtype == torch.float64


def test_rejects_negative_orders() -> None:
    with pytest.raises(ValueError, match="order"):
        log_ive(-0.5, torch.ones(2))
    with pytest.raises(ValueError, match="order"):
        ive_ratio(math.nan, torch.ones(2))
    with pytest.raises(ValueError, match="order"):  # checked for host tensors only (no device sync)
        log_ive(torch.tensor([1.0, -2.0]), torch.ones(2))


@pytest.mark.parametrize("v", [0.0, 4.0, 500.0, "tensor"])
def test_no_host_sync_off_the_cpu(v: float | str) -> None:
    # Meta tensors have no data: any data-dependent host branch (.item(), bool(tensor)) would raise.
    # This is what keeps CUDA calls free of device-to-host round trips.
    z = torch.empty(5, device="meta", dtype=torch.float32, requires_grad=True)
    order = torch.empty(3, 1, device="meta") if v == "tensor" else v
    out, ratio = log_ive(order, z), ive_ratio(order, z)
    assert out.device.type == ratio.device.type == "meta"
    assert out.shape == ratio.shape == ((3, 5) if v == "tensor" else (5,))
    (grad,) = torch.autograd.grad(out.sum() + ratio.sum(), z, create_graph=True)
    (grad2,) = torch.autograd.grad(grad.sum(), z)
    assert grad2.shape == z.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_on_wide_random_grid(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1234)
    n = 20_000
    finfo = torch.finfo(dtype)
    lo, hi = math.log10(finfo.tiny) - (7 if dtype == torch.float32 else 15), math.log10(finfo.max)
    z = 10 ** (lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64))
    z = z.to(dtype).clamp(max=finfo.max)
    v = torch.rand(n, generator=gen, dtype=torch.float64) ** 3 * 5000.0
    v[: n // 2] = torch.floor(v[: n // 2] * 2) / 2  # half of them on half-integers
    z.requires_grad_(True)
    for orders in (v.to(dtype), 0.0, 4.0, 49.5, 1000.0, 1e12, 1e18):
        out, ratio = log_ive(orders, z), ive_ratio(orders, z)
        assert torch.isfinite(out).all()
        assert (out <= 0).all()
        assert torch.isfinite(ratio).all()
        assert ((ratio >= 0) & (ratio <= 1)).all()
        (grad,) = torch.autograd.grad(out.sum() + ratio.sum(), z)
        assert not torch.isnan(grad).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    z_cpu = torch.tensor([0.0, 1e-6, 0.3, 12.0, 4e3, 1e7], dtype=torch.float64)
    v_cpu = torch.tensor([[0.0], [2.5], [49.5], [900.0]], dtype=torch.float64)
    z = z_cpu.cuda().requires_grad_(True)
    for order_cpu, order in ((v_cpu, v_cpu.cuda()), (4.0, 4.0)):
        for dtype in (torch.float64, torch.float32):
            out = log_ive(order, z.to(dtype))
            ratio = ive_ratio(order, z.to(dtype))
            assert out.device.type == ratio.device.type == "cuda"
            assert out.dtype == dtype
            torch.testing.assert_close(out.cpu(), log_ive(order_cpu, z_cpu.to(dtype)))
            torch.testing.assert_close(ratio.cpu(), ive_ratio(order_cpu, z_cpu.to(dtype)))
    (grad,) = torch.autograd.grad(log_ive(v_cpu.cuda(), z).sum(), z)
    assert grad.device.type == "cuda"


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------

GRAD_POINTS = [
    (0.0, [1e-3, 0.05, 0.7, 3.0]),
    (0.5, [1e-2, 1.0, 40.0, 2e4]),
    (4.0, [1e-4, 0.3, 8.0, 5e5]),
    (19.9, [0.5, 20.0, 300.0]),
    (50.0, [1e-2, 10.0, 60.0, 1e4]),
    (1000.0, [1.0, 900.0, 1e6]),
]


@pytest.mark.parametrize(("v", "zs"), GRAD_POINTS)
def test_gradcheck(v: float, zs: list[float]) -> None:
    z = torch.tensor(zs, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: log_ive(v, t), (z,))
    assert gradcheck(lambda t: ive_ratio(v, t), (z,))
    assert gradcheck(lambda t: log_iv(v, t), (z,))
    assert gradgradcheck(lambda t: log_ive(v, t), (z,))
    assert gradgradcheck(lambda t: ive_ratio(v, t), (z,))


def test_gradcheck_tensor_orders() -> None:
    v = torch.tensor([[0.0], [2.5], [31.0]], dtype=torch.float64)
    z = torch.tensor([0.01, 1.0, 7.0, 150.0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: log_ive(v, t), (z,))
    assert gradgradcheck(lambda t: log_ive(v, t), (z,))
    assert gradgradcheck(lambda t: ive_ratio(v, t), (z,))


@pytest.mark.parametrize(("v", "zs"), GRAD_POINTS)
def test_gradient_matches_mpmath_derivative(v: float, zs: list[float]) -> None:
    z = torch.tensor(zs, dtype=torch.float64, requires_grad=True)
    (grad_log,) = torch.autograd.grad(log_ive(v, z).sum(), z)
    (grad_ratio,) = torch.autograd.grad(ive_ratio(v, z).sum(), z)
    mv = mp.mpf(v)

    def mp_log_ive(t: mp.mpf) -> mp.mpf:
        return _mp_log_i(mv, t) - t

    def mp_ratio(t: mp.mpf) -> mp.mpf:
        return mp.exp(_mp_log_i(mv + 1, t) - _mp_log_i(mv, t))

    for zi, gl, gr in zip(zs, grad_log.tolist(), grad_ratio.tolist(), strict=True):
        with mp.workdps(MP_DPS):
            want_log = mp.diff(mp_log_ive, mp.mpf(zi))
            want_ratio = mp.diff(mp_ratio, mp.mpf(zi))
        # The formulas subtract numbers of size one (r and 1): absolute error a few 1e-16, so
        # relative 1e-9 or better wherever the derivative is not itself tiny.
        assert abs(gl - float(want_log)) <= 1e-9 * abs(float(want_log)) + 1e-14
        assert abs(gr - float(want_ratio)) <= 1e-9 * abs(float(want_ratio)) + 1e-14


def test_float32_gradient_is_computed_in_double() -> None:
    # d/dz I_{v+1}/I_v ~ (2v+1)/(2 z^2) at large z comes from cancellation of numbers of size one:
    # in float32 arithmetic it would be noise, here it keeps float32 relative accuracy.
    z = torch.tensor([3e3], dtype=torch.float32, requires_grad=True)
    with torch.no_grad():
        zm_value = z.item()
    (g,) = torch.autograd.grad(ive_ratio(1.0, z).sum(), z)
    with mp.workdps(MP_DPS):
        zm = mp.mpf(zm_value)
        want = mp.diff(lambda t: mp.besseli(2, t) / mp.besseli(1, t), zm)
    assert g.dtype == torch.float32
    assert abs(g.item() / float(want) - 1.0) <= 1e-4


# --------------------------------------------------------------------------------------------------
# Identities across orders (each side may come from a different code path)
# --------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    v=st.floats(min_value=0.0, max_value=2500.0),
    log10_z=st.floats(min_value=-8.0, max_value=7.0),
)
def test_recurrence_identities(v: float, log10_z: float) -> None:
    # 1 / r_v = 2(v+1)/z + r_{v+1} and log_ive(v+1) - log_ive(v) = log r_v.
    z = torch.tensor(10.0**log10_z, dtype=torch.float64)
    r0, r1 = ive_ratio(v, z).item(), ive_ratio(v + 1.0, z).item()
    lhs, rhs = 1.0 / r0, 2.0 * (v + 1.0) / z.item() + r1
    assert abs(lhs / rhs - 1.0) <= 1e-12
    diff = log_ive(v + 1.0, z).item() - log_ive(v, z).item()
    assert abs(diff - math.log(r0)) <= 1e-12 * max(
        1.0, abs(math.log(r0)), abs(log_ive(v, z).item())
    )

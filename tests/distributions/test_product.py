"""ProductSphere: shapes, expand, support, validation, factor order, KL, plate-form equivalence."""

from __future__ import annotations

import math
import pickle

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import ExpandedDistribution, constraints
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence
from torch.nn.functional import normalize

from pyro_svae.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from pyro_svae.distributions.product import ProductSphere, ProductSphereConstraint
from pyro_svae.ops import log_sphere_area

F64 = torch.float64
DIMS = (2, 5, 3)  # deliberately unsorted: S^1 x S^4 x S^2 in R^10


def _loc(shape: tuple, dim: int, dtype=F64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(*shape, dim, generator=g, dtype=dtype), dim=-1)


def _kappa(shape: tuple, dtype=F64, low: float = 0.5, high: float = 8.0, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=g, dtype=dtype)


def _mixed(batch_shape: tuple = (3,), dtype=F64) -> ProductSphere:
    """vMF on S^1, Power Spherical on S^4, uniform on S^2, in that order."""
    return ProductSphere(
        [
            VonMisesFisher(_loc(batch_shape, 2, dtype, 0), _kappa(batch_shape, dtype, seed=1)),
            PowerSpherical(_loc(batch_shape, 5, dtype, 2), _kappa(batch_shape, dtype, seed=3)),
            HypersphericalUniform(3, batch_shape, dtype=dtype),
        ]
    )


def _vmf_product(batch_shape: tuple = (3,), dims=DIMS, seed: int = 0, high: float = 8.0):
    return ProductSphere(
        [
            VonMisesFisher(
                _loc(batch_shape, m, F64, seed + 2 * i),
                _kappa(batch_shape, F64, high=high, seed=seed + 2 * i + 1),
            )
            for i, m in enumerate(dims)
        ]
    )


# ----------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("sample_shape", [(), (4,), (2, 5)])
def test_shapes_support_dtype(dtype, batch_shape, sample_shape):
    d = _mixed(batch_shape, dtype)
    assert d.dims == DIMS
    assert d.batch_shape == batch_shape
    assert d.event_shape == (sum(DIMS),)
    assert d.has_rsample
    assert [type(c) for c in d.components] == [
        VonMisesFisher,
        PowerSpherical,
        HypersphericalUniform,
    ]
    z = d.rsample(sample_shape)
    assert z.shape == sample_shape + batch_shape + (10,)
    assert z.dtype == dtype
    assert bool(d.support.check(z).all())
    for block in d.split(z):
        assert bool(constraints.sphere.check(block).all())
    assert d.sample(sample_shape).shape == z.shape
    log_p = d.log_prob(z)
    assert log_p.shape == sample_shape + batch_shape
    assert log_p.dtype == dtype
    assert torch.isfinite(log_p).all()
    assert d.entropy().shape == batch_shape
    assert d.mean.shape == (*batch_shape, 10)


def test_batch_shapes_broadcast():
    d = ProductSphere(
        [
            VonMisesFisher(_loc((4, 1), 3), _kappa((4, 1))),
            PowerSpherical(_loc((3,), 2), _kappa((3,))),
            HypersphericalUniform(4, dtype=F64),
        ]
    )
    assert d.batch_shape == (4, 3)
    assert all(c.batch_shape == (4, 3) for c in d.components)
    assert d.rsample((2,)).shape == (2, 4, 3, 9)
    assert d.log_prob(d.sample()).shape == (4, 3)


def test_log_prob_broadcasts_values():
    d = _mixed((3,))
    z = d.sample((5, 1))
    assert d.log_prob(z).shape == (5, 1, 3)
    assert d.log_prob(z[:, :, :1]).shape == (5, 1, 3)


def test_infer_shapes():
    d = _mixed((2, 3))
    shapes = [(c.batch_shape, c.event_shape) for c in d.components]
    assert ProductSphere.infer_shapes(shapes) == (d.batch_shape, d.event_shape)
    assert ProductSphere.infer_shapes([((4, 1), (3,)), ((3,), (2,))]) == ((4, 3), (5,))


# ------------------------------------------------------------------------- joint quantities, order


def test_log_prob_entropy_mean_are_sums_and_concatenations():
    d = _mixed((3,))
    z = d.sample((6,))
    blocks = (z[..., :2], z[..., 2:7], z[..., 7:])
    expected = sum(c.log_prob(b) for c, b in zip(d.components, blocks, strict=True))
    torch.testing.assert_close(d.log_prob(z), expected, rtol=0, atol=1e-12)
    entropy = sum(c.entropy() for c in d.components)
    torch.testing.assert_close(d.entropy(), entropy, rtol=0, atol=1e-12)
    torch.testing.assert_close(d.mean, torch.cat([c.mean for c in d.components], -1))


def test_entropy_matches_monte_carlo():
    torch.manual_seed(0)
    d = _mixed((3,))
    n = 20000
    log_p = d.log_prob(d.sample((n,)))
    mc, se = -log_p.mean(0), log_p.std(0) / math.sqrt(n)
    assert ((mc - d.entropy()).abs() <= 4 * se + 1e-10).all(), (mc, d.entropy(), se)


def test_factor_order_is_preserved():
    """Blocks follow the components as given: never sorted by dimension."""
    locs = [_loc((), m, F64, seed=10 + m) for m in DIMS]
    kappa = 1e4  # samples lie within a few degrees of their loc
    d = ProductSphere([VonMisesFisher(loc, kappa) for loc in locs])
    assert d.dims == DIMS
    z = d.rsample((200,))
    blocks = d.split(z)
    assert [b.shape[-1] for b in blocks] == list(DIMS)
    for block, loc in zip(blocks, locs, strict=True):
        assert ((block * loc).sum(-1) > 0.99).all()
    for mean_block, component in zip(d.split(d.mean), d.components, strict=True):
        torch.testing.assert_close(mean_block, component.mean)
    # the same factors listed in another order: a different distribution on a permuted vector
    perm = (1, 0, 2)
    e = ProductSphere([d.components[i] for i in perm])
    assert e.dims == (5, 2, 3)
    z_perm = torch.cat([blocks[i] for i in perm], dim=-1)
    torch.testing.assert_close(e.log_prob(z_perm), d.log_prob(z), rtol=0, atol=1e-9)
    assert not bool(d.support.check(z_perm).any())  # blocks in the wrong order: off the product


def test_split_returns_views():
    d = _mixed((3,))
    z = d.sample((2,))
    blocks = d.split(z)
    assert isinstance(blocks, tuple)
    assert [b.shape for b in blocks] == [(2, 3, m) for m in DIMS]
    torch.testing.assert_close(torch.cat(blocks, -1), z)
    assert all(b.untyped_storage().data_ptr() == z.untyped_storage().data_ptr() for b in blocks)
    with pytest.raises(ValueError, match=r"\(\.\.\., 10\)"):
        d.split(z[..., :9])


def test_rsample_gradients_reach_every_factor():
    params = {
        "loc1": _loc((4,), 2).requires_grad_(),
        "kappa1": _kappa((4,)).requires_grad_(),
        "loc2": _loc((4,), 5, seed=2).requires_grad_(),
        "kappa2": _kappa((4,), seed=3).requires_grad_(),
    }
    d = ProductSphere(
        [
            VonMisesFisher(params["loc1"], params["kappa1"]),
            HypersphericalUniform(3, dtype=F64),
            PowerSpherical(params["loc2"], params["kappa2"]),
        ]
    )
    target = torch.randn(10, dtype=F64)
    (d.rsample((50,)) @ target).sum().backward()
    for name, tensor in params.items():
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name


class _NoRsampleUniform(HypersphericalUniform):
    has_rsample = False


def test_has_rsample_requires_every_component():
    d = ProductSphere([VonMisesFisher(_loc((), 3), 2.0), _NoRsampleUniform(4, dtype=F64)])
    assert not d.has_rsample
    assert d.sample((2,)).shape == (2, 7)
    with pytest.raises(NotImplementedError, match="_NoRsampleUniform"):
        d.rsample()


# ------------------------------------------------------------------------------ expand, pickling


def test_expand():
    d = _mixed((3,))
    e = d.expand((2, 3))
    assert type(e) is ProductSphere
    assert e.batch_shape == (2, 3)
    assert e.dims == d.dims
    assert all(c.batch_shape == (2, 3) for c in e.components)
    assert [type(c) for c in e.components] == [type(c) for c in d.components]
    z = e.sample()
    assert z.shape == (2, 3, 10)
    torch.testing.assert_close(e.log_prob(z), d.log_prob(z))
    torch.testing.assert_close(e.entropy(), d.entropy().expand(2, 3))
    with pytest.raises((ValueError, RuntimeError)):
        d.expand((4,))


def test_expand_inside_plate_keeps_class():
    d = _mixed(())

    def model():
        with pyro.plate("data", 7):
            pyro.sample("z", d)

    site = poutine.trace(model).get_trace().nodes["z"]
    assert type(site["fn"]) is ProductSphere
    assert not isinstance(site["fn"], ExpandedDistribution)
    assert not any(isinstance(c, ExpandedDistribution) for c in site["fn"].components)
    assert site["value"].shape == (7, 10)


def test_pickle_round_trip():
    d = _mixed((3,))
    z = d.sample((4,))
    clone = pickle.loads(pickle.dumps(d))
    assert type(clone) is ProductSphere
    assert clone.dims == d.dims
    torch.testing.assert_close(clone.log_prob(z), d.log_prob(z))
    assert pickle.loads(pickle.dumps(d.support)) == d.support


def test_uniform_constructor():
    u = ProductSphere.uniform((5, 5, 2), (3,), dtype=F64)
    assert u.dims == (5, 5, 2)
    assert u.batch_shape == (3,)
    assert all(isinstance(c, HypersphericalUniform) for c in u.components)
    z = u.sample()
    expected = -(2 * log_sphere_area(5) + log_sphere_area(2))
    torch.testing.assert_close(u.log_prob(z), torch.full((3,), expected, dtype=F64))
    torch.testing.assert_close(u.mean, torch.zeros(3, 12, dtype=F64))
    for bad in ((), 5, (5, 1)):
        with pytest.raises(ValueError, match="dim"):
            ProductSphere.uniform(bad)


def test_repr_names_components():
    text = repr(_mixed((3,)))
    assert text.startswith("ProductSphere([VonMisesFisher")
    assert "PowerSpherical" in text
    assert "HypersphericalUniform" in text


# ------------------------------------------------------------------------------ support, validation


def test_support_checks_every_block():
    d = _mixed((3,))
    support = d.support
    assert isinstance(support, ProductSphereConstraint)
    assert support.event_dim == 1
    assert support == ProductSphereConstraint(DIMS)
    assert support != ProductSphereConstraint((5, 2, 3))
    assert "(2, 5, 3)" in repr(support)
    z = d.sample((4,))
    assert support.check(z).shape == (4, 3)
    assert bool(support.check(z).all())
    for start, stop in ((0, 2), (2, 7), (7, 10)):
        bad = z.clone()
        bad[1, 2, start:stop] *= 1.001
        ok = support.check(bad)
        assert not bool(ok[1, 2])
        assert int(ok.sum()) == 11
    # a unit vector overall is not a product of unit vectors
    overall = normalize(torch.randn(3, 10, dtype=F64), dim=-1)
    assert not bool(support.check(overall).any())
    # wrong width fails everywhere
    assert not bool(support.check(z[..., :9]).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [2, 5, 64])
def test_support_tolerance_matches_pyro_sphere(dtype, m):
    """Per block, exactly the tolerance of pyro's constraints.sphere."""
    u = normalize(torch.randn(m, dtype=dtype), dim=-1)
    eps = torch.finfo(dtype).eps
    scales = torch.tensor([1 + k * eps for k in range(-100, 101, 3)], dtype=torch.float64)
    values = (u.to(torch.float64) * scales.unsqueeze(-1)).to(dtype)
    single = ProductSphereConstraint((m,)).check(values)
    assert torch.equal(single, constraints.sphere.check(values))
    assert single.any()  # the sweep crosses the threshold
    assert not single.all()
    pair = ProductSphereConstraint((m, m)).check(torch.cat([values, values.flip(0)], -1))
    assert torch.equal(pair, single & single.flip(0))


def test_validation_rejects_points_off_the_product():
    d = ProductSphere(
        [VonMisesFisher(_loc((), 3), 2.0), PowerSpherical(_loc((), 4), 1.0)],
        validate_args=True,
    )
    z = d.sample()
    assert torch.isfinite(d.log_prob(z))
    with pytest.raises(ValueError, match=r"\(\.\.\., 7\)"):
        d.log_prob(torch.ones(8, dtype=F64))
    off = z.clone()
    off[3:] *= 2.0  # first block still a unit vector, the second not
    with pytest.raises(ValueError, match="support"):
        d.log_prob(off)


def test_constructor_errors():
    vmf = VonMisesFisher(_loc((3,), 3), _kappa((3,)))
    with pytest.raises(ValueError, match="at least one component"):
        ProductSphere([])
    with pytest.raises(ValueError, match="sequence"):
        ProductSphere(vmf)
    with pytest.raises(ValueError, match="component 1 must be a sphere distribution"):
        ProductSphere([vmf, "vmf"])
    gaussian = dist.Normal(torch.zeros(3, 4, dtype=F64), 1.0).to_event(1)
    with pytest.raises(ValueError, match=r"component 1 must be a distribution on a sphere.*Real"):
        ProductSphere([vmf, gaussian])  # event shape (4,) but not on a sphere
    with pytest.raises(ValueError, match=r"component 0 .*event_shape \(\)"):
        ProductSphere([dist.Normal(0.0, 1.0), vmf])
    with pytest.raises(ValueError, match=r"component 1 .*event_shape \(3, 3\)"):
        ProductSphere([vmf, vmf.expand((2, 3)).to_event(1)])
    with pytest.raises(ValueError, match=r"pass its \.components"):
        ProductSphere([vmf, _mixed((3,))])
    with pytest.raises(ValueError, match=r"batch shapes \[\(3,\), \(4,\)\] do not broadcast"):
        ProductSphere([vmf, PowerSpherical(_loc((4,), 2), _kappa((4,)))])


# ----------------------------------------------------------------------------------------------- KL


def test_kl_to_uniform_is_sum_of_factor_kls():
    p = _mixed((3,))
    q = ProductSphere.uniform(DIMS, dtype=F64)
    kl = kl_divergence(p, q)
    assert kl.shape == (3,)
    factors = [kl_divergence(p_i, q_i) for p_i, q_i in zip(p.components, q.components, strict=True)]
    torch.testing.assert_close(kl, sum(factors), rtol=0, atol=1e-12)
    torch.testing.assert_close(kl, factors[0] + factors[1])  # the uniform factor contributes 0
    log_area = sum(log_sphere_area(m) for m in DIMS)
    torch.testing.assert_close(kl, log_area - p.entropy(), rtol=1e-10, atol=1e-10)
    assert (kl > 0).all()


def test_kl_to_uniform_matches_monte_carlo():
    torch.manual_seed(4)
    p = _mixed((3,))
    q = ProductSphere.uniform(DIMS, dtype=F64)
    n = 20000
    z = p.sample((n,))
    log_ratio = p.log_prob(z) - q.log_prob(z)
    se = log_ratio.std(0) / math.sqrt(n)
    assert ((log_ratio.mean(0) - kl_divergence(p, q)).abs() <= 4 * se + 1e-10).all()


def test_kl_between_vmf_products_and_batch_broadcast():
    p = ProductSphere(
        [
            VonMisesFisher(_loc((3,), 2), _kappa((3,))),
            PowerSpherical(_loc((3,), 5, seed=2), _kappa((3,), seed=3)),
        ]
    )
    q = _vmf_product((2, 1), dims=(2, 5), seed=7)
    kl = kl_divergence(p, q)
    assert kl.shape == (2, 3)
    expected = kl_divergence(p.components[0], q.components[0]) + kl_divergence(
        p.components[1], q.components[1]
    )
    torch.testing.assert_close(kl, expected, rtol=0, atol=1e-12)
    assert (kl > 0).all()
    torch.testing.assert_close(kl_divergence(q, q), torch.zeros(2, 1, dtype=F64), atol=1e-9, rtol=0)


def test_kl_requires_same_dims_in_same_order():
    p = _vmf_product((), dims=(2, 5))
    with pytest.raises(ValueError, match=r"same factor dimensions.*\(2, 5\).*\(5, 2\)"):
        kl_divergence(p, ProductSphere.uniform((5, 2), dtype=F64))
    with pytest.raises(ValueError, match="same factor dimensions"):
        kl_divergence(p, ProductSphere.uniform((2, 5, 3), dtype=F64))


def test_kl_without_closed_form_raises_not_implemented():
    """PS‖PS has no closed form: NotImplementedError (so TraceMeanField_ELBO falls back to MC)."""
    p = ProductSphere([VonMisesFisher(_loc((), 3), 2.0), PowerSpherical(_loc((), 4), 1.0)])
    q = ProductSphere([VonMisesFisher(_loc((), 3, seed=5), 1.0), PowerSpherical(_loc((), 4), 3.0)])
    with pytest.raises(NotImplementedError, match="factor 1"):
        kl_divergence(p, q)


# ------------------------------------------------------------- plate form vs product form, ELBO

N, K, M, X_DIM = 4, 3, 4, 6  # N points, K factors S^3 in R^4, observations in R^6


def _setup():
    g = torch.Generator().manual_seed(11)
    loc = normalize(torch.randn(N, K, M, generator=g, dtype=F64), dim=-1).requires_grad_()
    kappa = (0.5 + 10 * torch.rand(N, K, generator=g, dtype=F64)).requires_grad_()
    weight = torch.randn(K * M, X_DIM, generator=g, dtype=F64)
    x = torch.randn(N, X_DIM, generator=g, dtype=F64)
    return loc, kappa, weight, x


def _forms(loc, kappa, weight, x, likelihood=True):
    """The same model and guide written three ways: two plates, ``.to_event(1)``, ProductSphere."""

    def observe(z_flat, batch_dims: int):
        if likelihood:
            obs = x if batch_dims == 1 else x.unsqueeze(-2)
            mean = z_flat @ weight
            pyro.sample("x", dist.Normal(mean, 1.0).to_event(1), obs=obs)

    def model_plates():
        with pyro.plate("data", N, dim=-2):
            with pyro.plate("spheres", K, dim=-1):
                z = pyro.sample("z", HypersphericalUniform(M, dtype=F64))  # (N, K, M)
            observe(z.reshape(N, 1, K * M), 2)

    def guide_plates():
        with pyro.plate("data", N, dim=-2), pyro.plate("spheres", K, dim=-1):
            pyro.sample("z", VonMisesFisher(loc, kappa))

    def model_event():
        with pyro.plate("data", N):
            z = pyro.sample("z", HypersphericalUniform(M, (K,), dtype=F64).to_event(1))
            observe(z.reshape(N, K * M), 1)

    def guide_event():
        with pyro.plate("data", N):
            pyro.sample("z", VonMisesFisher(loc, kappa).to_event(1))

    def model_product():
        with pyro.plate("data", N):
            z = pyro.sample("z", ProductSphere.uniform((M,) * K, dtype=F64))  # (N, K * M)
            observe(z, 1)

    def guide_product():
        with pyro.plate("data", N):
            factors = [VonMisesFisher(loc[:, k], kappa[:, k]) for k in range(K)]
            pyro.sample("z", ProductSphere(factors))

    return {
        "plates": (model_plates, guide_plates, lambda z: z),
        "to_event": (model_event, guide_event, lambda z: z),
        "product": (model_product, guide_product, lambda z: z.reshape(N, K * M)),
    }


def _analytic_kl(loc, kappa):
    return VonMisesFisher(loc, kappa).kl_to_uniform().sum()


def test_plate_and_product_forms_have_the_same_kl_term():
    """No likelihood: the loss is the analytic KL, exactly, whatever the seed (no Monte Carlo)."""
    loc, kappa, weight, x = _setup()
    expected = _analytic_kl(loc, kappa).item()
    for name, (model, guide, _) in _forms(loc, kappa, weight, x, likelihood=False).items():
        losses = []
        for seed in (0, 1):
            pyro.set_rng_seed(seed)
            losses.append(TraceMeanField_ELBO().loss(model, guide))
        assert losses[0] == pytest.approx(expected, rel=1e-12), name
        assert losses[1] == losses[0], name


def test_plate_and_product_forms_give_the_same_elbo_and_gradients():
    """Same parameters and the same (replayed) latent sample: same loss and same gradients."""
    loc, kappa, weight, x = _setup()
    pyro.set_rng_seed(3)
    z = VonMisesFisher(loc.detach(), kappa.detach()).sample()  # (N, K, M)
    log_lik = dist.Normal(z.reshape(N, K * M) @ weight, 1.0).log_prob(x).sum()
    expected = (_analytic_kl(loc, kappa) - log_lik).item()
    results = {}
    for name, (model, guide, shape_z) in _forms(loc, kappa, weight, x).items():
        # replay (not condition: the site must stay latent) a guide trace carrying the fixed sample
        fixed = poutine.trace(guide).get_trace()
        fixed.nodes["z"]["value"] = shape_z(z)
        loss = TraceMeanField_ELBO().differentiable_loss(model, poutine.replay(guide, trace=fixed))
        kappa.grad = None
        loss.backward()
        results[name] = (loss.item(), kappa.grad.clone())
        assert results[name][0] == pytest.approx(expected, rel=1e-12), name
    assert loc.grad is None  # z is fixed and KL(vMF || U) does not depend on loc
    reference = results["product"]
    for name in ("plates", "to_event"):
        assert results[name][0] == pytest.approx(reference[0], rel=1e-12)
        torch.testing.assert_close(results[name][1], reference[1], rtol=1e-10, atol=1e-12)
    assert reference[1].abs().sum() > 0


def test_sampled_elbo_is_likelihood_plus_analytic_kl():
    """Unconditioned: loss = -log p(x | z) + KL for the z the guide drew, in every form."""
    loc, kappa, weight, x = _setup()
    kl = _analytic_kl(loc, kappa).item()
    for name, (model, guide, shape_z) in _forms(loc, kappa, weight, x).items():
        pyro.set_rng_seed(5)
        guide_trace = poutine.trace(guide).get_trace()
        z = guide_trace.nodes["z"]["value"].reshape(N, K * M)
        log_lik = dist.Normal(z @ weight, 1.0).log_prob(x).sum().item()
        pyro.set_rng_seed(5)
        loss = TraceMeanField_ELBO().loss(model, guide)
        assert loss == pytest.approx(kl - log_lik, rel=1e-10), name
        assert shape_z(z.reshape(N, K, M)).shape == guide_trace.nodes["z"]["value"].shape


def test_trace_mean_field_falls_back_to_monte_carlo_without_closed_form():
    """A factor pair with no closed form (PS‖PS) makes the ELBO use samples: seeds differ."""
    p_loc, q_loc = _loc((N,), 4), _loc((N,), 4, seed=9)

    def model():
        with pyro.plate("data", N):
            pyro.sample(
                "z", ProductSphere([VonMisesFisher(q_loc, 1.0), PowerSpherical(q_loc, 2.0)])
            )

    def guide():
        with pyro.plate("data", N):
            pyro.sample(
                "z", ProductSphere([VonMisesFisher(p_loc, 3.0), PowerSpherical(p_loc, 4.0)])
            )

    losses = []
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        losses.append(TraceMeanField_ELBO().loss(model, guide))
    assert all(math.isfinite(v) for v in losses)
    assert losses[0] != losses[1]

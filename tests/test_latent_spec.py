"""The latent-spec parser: manifold convention, products, groups, round trips and error messages."""

from __future__ import annotations

import dataclasses

import pytest

from pyro_svae.latent_spec import (
    FAMILY_ALIASES,
    LatentFactor,
    LatentGroup,
    LatentSpec,
    parse_latent_spec,
)


@pytest.mark.parametrize(
    ("text", "factors", "ambient_dim", "canonical", "describe"),
    [
        ("vmf:9", [("vmf", 9)], 10, "vmf:9", "S^9 ⊂ R^10"),
        ("vmf:4,4", [("vmf", 4), ("vmf", 4)], 10, "vmf:4,4", "S^4 × S^4 ⊂ R^10"),
        ("ps:2,2,2", [("ps", 2)] * 3, 9, "ps:2,2,2", "S^2 × S^2 × S^2 ⊂ R^9"),
        ("normal:10", [("normal", 10)], 10, "normal:10", "R^10 ⊂ R^10"),
        ("diffusion:9", [("diffusion", 9)], 10, "diffusion:9", "S^9 ⊂ R^10"),
        ("vmf:4,1", [("vmf", 4), ("vmf", 1)], 7, "vmf:4,1", "S^4 × S^1 ⊂ R^7"),
        ("vmf:1", [("vmf", 1)], 2, "vmf:1", "S^1 ⊂ R^2"),
        ("vmf:4+normal:2", [("vmf", 4), ("normal", 2)], 7, "vmf:4+normal:2", "S^4 × R^2 ⊂ R^7"),
        (
            "normal:3+ps:2+vmf:1,1",
            [("normal", 3), ("ps", 2), ("vmf", 1), ("vmf", 1)],
            10,
            "normal:3+ps:2+vmf:1,1",
            "R^3 × S^2 × S^1 × S^1 ⊂ R^10",
        ),
    ],
)
def test_valid_specs(text, factors, ambient_dim, canonical, describe):
    spec = parse_latent_spec(text)
    assert spec.factors == tuple(LatentFactor(f, d) for f, d in factors)
    assert spec.ambient_dim == ambient_dim
    assert spec.manifold_dim == sum(d for _, d in factors)
    assert spec.ambient_dims == tuple(f.ambient_dim for f in spec.factors)
    assert spec.is_product == (len(factors) > 1)
    assert spec.format() == str(spec) == canonical
    assert spec.describe() == describe
    assert parse_latent_spec(str(spec)) == spec


def test_manifold_convention():
    """The number is the manifold dimension: S^d lives in R^(d+1); a Gaussian R^d in R^d."""
    assert LatentFactor("vmf", 9).ambient_dim == 10
    assert LatentFactor("ps", 1).ambient_dim == 2
    assert LatentFactor("diffusion", 2).ambient_dim == 3
    assert LatentFactor("normal", 10).ambient_dim == 10
    assert LatentFactor("vmf", 9).manifold == "S^9"
    assert LatentFactor("normal", 4).manifold == "R^4"
    assert str(LatentFactor("ps", 2)) == "ps:2"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("  VMF : 4 , 4  ", "vmf:4,4"),
        ("PowerSpherical:2,2", "ps:2,2"),
        ("gaussian:10", "normal:10"),
        ("Gaussian: 3 + vMF: 2", "normal:3+vmf:2"),
        ("vmf:4+vmf:1", "vmf:4,1"),  # consecutive terms of one family are merged
        ("vmf:04", "vmf:4"),
        ("vmf:2\t,\n3", "vmf:2,3"),
    ],
)
def test_normalisation(text, canonical):
    spec = parse_latent_spec(text)
    assert str(spec) == canonical
    assert parse_latent_spec(canonical) == spec


def test_families_and_flags():
    spec = parse_latent_spec("vmf:4+normal:2+vmf:1")
    assert spec.families == ("vmf", "normal")
    assert spec.is_product
    assert not spec.is_spherical
    assert str(spec) == "vmf:4+normal:2+vmf:1"
    assert parse_latent_spec("ps:2,2").is_spherical
    assert not parse_latent_spec("vmf:9").is_product
    assert parse_latent_spec("ps:2,2").families == ("ps",)


def test_order_is_preserved():
    assert parse_latent_spec("vmf:1,4") != parse_latent_spec("vmf:4,1")
    assert parse_latent_spec("vmf:1,4").ambient_dims == (2, 5)
    assert parse_latent_spec("vmf:4,1").ambient_dims == (5, 2)


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("vmf:9", [("vmf", 9, 1, 0, 10)]),
        ("vmf:4,4", [("vmf", 4, 2, 0, 10)]),
        ("ps:2,2,2", [("ps", 2, 3, 0, 9)]),
        ("vmf:4,1", [("vmf", 4, 1, 0, 5), ("vmf", 1, 1, 5, 7)]),
        ("vmf:4,4,1", [("vmf", 4, 2, 0, 10), ("vmf", 1, 1, 10, 12)]),
        ("vmf:4,1,4", [("vmf", 4, 1, 0, 5), ("vmf", 1, 1, 5, 7), ("vmf", 4, 1, 7, 12)]),
        ("vmf:2+ps:2", [("vmf", 2, 1, 0, 3), ("ps", 2, 1, 3, 6)]),
        ("vmf:2,2+normal:3", [("vmf", 2, 2, 0, 6), ("normal", 3, 1, 6, 9)]),
    ],
)
def test_groups(text, groups):
    spec = parse_latent_spec(text)
    got = spec.groups()
    assert all(isinstance(g, LatentGroup) for g in got)
    assert [(g.family, g.manifold_dim, g.count, g.start, g.stop) for g in got] == groups
    assert sum(g.size for g in got) == spec.ambient_dim
    assert got[-1].stop == spec.ambient_dim
    for group in got:
        assert group.size == group.count * group.ambient_dim
        assert group.is_sphere == (group.family != "normal")


def test_dataclasses_are_frozen_and_hashable():
    spec = parse_latent_spec("vmf:4,4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.factors = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.factors[0].manifold_dim = 3
    assert hash(spec) == hash(parse_latent_spec("vmf: 4, 4"))
    assert len({spec, parse_latent_spec("vmf:4,4"), parse_latent_spec("vmf:9")}) == 2
    assert LatentSpec([LatentFactor("vmf", 4)]).factors == (
        LatentFactor("vmf", 4),
    )  # list -> tuple


def test_spec_passes_through():
    spec = parse_latent_spec("ps:2,2")
    assert parse_latent_spec(spec) is spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the spec is empty"),
        ("   ", "the spec is empty"),
        ("foo:3", "unknown family 'foo'"),
        ("svae:9", "unknown family 'svae'"),
        ("vmf", "no dimension after 'vmf'"),
        ("vmf:", "no dimension after 'vmf'"),
        ("9", "unknown family '9'"),
        (":9", "unknown family ''"),
        ("vmf:0", "must be >= 1"),
        ("vmf:4,0", "must be >= 1"),
        ("vmf:-1", "'-1' of 'vmf' is not a positive integer"),
        ("vmf:1.5", "'1.5' of 'vmf' is not a positive integer"),
        ("vmf:abc", "'abc' of 'vmf' is not a positive integer"),
        ("vmf:4,,4", "'' of 'vmf' is not a positive integer"),
        ("vmf:4,", "'' of 'vmf' is not a positive integer"),
        ("vmf:²", "'²' of 'vmf' is not a positive integer"),
        ("vmf:4:4", "'4:4' of 'vmf' is not a positive integer"),
        ("vmf:4+", "empty term"),
        ("+vmf:4", "empty term"),
        ("normal:5,5", "single dimension .* write normal:10"),
        ("gaussian:2,3", "'gaussian' takes a single dimension"),
        ("normal:2+vmf:3+normal:3", "more than one 'normal' term.* normal:5"),
        ("normal:0", "must be >= 1"),
    ],
)
def test_errors_quote_the_spec_and_give_an_example(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_latent_spec(text)
    text_of_error = str(info.value)
    assert repr(text) in text_of_error
    assert "expected e.g. 'vmf:9'" in text_of_error


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="known:") as info:
        parse_latent_spec("uniform:3")
    for alias in FAMILY_ALIASES:
        assert repr(alias) in str(info.value)


@pytest.mark.parametrize("bad", [None, 9, ["vmf:9"], b"vmf:9"])
def test_non_string_is_a_type_error(bad):
    with pytest.raises(TypeError, match="string"):
        parse_latent_spec(bad)


def test_direct_construction_is_validated():
    with pytest.raises(ValueError, match="family"):
        LatentFactor(
            "powerspherical", 2
        )  # aliases are for the parser; dataclasses hold canonical names
    for bad in (0, -3, 2.0, True, "4"):
        with pytest.raises(ValueError, match="positive integer"):
            LatentFactor("vmf", bad)
    with pytest.raises(ValueError, match="non-empty"):
        LatentSpec(())
    with pytest.raises(ValueError, match="non-empty"):
        LatentSpec(("vmf:4",))
    with pytest.raises(ValueError, match="at most one Euclidean"):
        LatentSpec((LatentFactor("normal", 2), LatentFactor("normal", 3)))

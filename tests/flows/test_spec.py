from __future__ import annotations

import pytest

from pyro_svae.flows import FlowSpec, FlowTerm, parse_flow_spec


def test_parse_single_term():
    spec = parse_flow_spec("planar:16")
    assert spec == FlowSpec((FlowTerm("planar", 16),), "static")
    assert str(spec) == "planar:16"
    assert spec.num_steps == 16
    assert not spec.amortized


def test_parse_terms_type_and_whitespace():
    spec = parse_flow_spec(" Householder : 2 + MOBIUS:1 ", "amortized")
    assert spec.terms == (FlowTerm("householder", 2), FlowTerm("mobius", 1))
    assert spec.amortized
    assert spec.flow_type == "amortized"
    assert spec.euclidean_terms() == (FlowTerm("householder", 2),)
    assert spec.sphere_terms() == spec.terms
    assert parse_flow_spec(str(spec), "amortized") == spec
    assert parse_flow_spec(spec, "static").flow_type == "static"
    mixed = parse_flow_spec("planar:2+mobiusmix:3")
    assert mixed.euclidean_terms() == (FlowTerm("planar", 2),)
    assert mixed.sphere_terms() == (FlowTerm("mobiusmix", 3),)
    assert mixed.has_kind("planar")
    assert mixed.has_kind("mobiusmix")
    assert not mixed.has_kind("radial")


@pytest.mark.parametrize("kind", ["planar", "radial", "householder", "nice", "mobius", "mobiusmix"])
def test_every_kind(kind):
    assert parse_flow_spec(f"{kind}:3").terms == (FlowTerm(kind, 3),)


@pytest.mark.parametrize("empty", [None, "", "none", " None "])
def test_no_flow(empty):
    assert parse_flow_spec(empty) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("planar", "cannot read"),
        ("planar:0", "positive"),
        ("planar:-1", "cannot read"),
        ("iaf:4", "unknown flow kind"),
        ("planar:4+", "cannot read"),
        ("planar:x", "cannot read"),
    ],
)
def test_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_flow_spec(text)


def test_bad_type():
    with pytest.raises(ValueError, match="flow type"):
        parse_flow_spec("planar:2", "dynamic")
    with pytest.raises(TypeError):
        parse_flow_spec(3)
    with pytest.raises(ValueError, match="positive integer"):
        FlowTerm("planar", 0)

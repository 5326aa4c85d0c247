"""Per-factor KL of a trained model (``factor_kl``) and the detection of collapsed sphere factors."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence

from pyro_svae.data import BinaryImageData
from pyro_svae.distributions import HypersphericalUniform, VonMisesFisher
from pyro_svae.models import VAE
from pyro_svae.models.flow_vae import FlowVAE
from pyro_svae.train import train
from pyro_svae.train.evaluation import (
    UNUSED_FACTOR_KL,
    factor_kl,
    score,
    sphere_factor_count,
    sphere_factor_kls,
    unused_sphere_factors,
)

from .conftest import tiny_config


def _data(n: int = 60) -> BinaryImageData:
    images = torch.rand(n, 16, generator=torch.Generator().manual_seed(0)).round()
    return BinaryImageData(images, None, image_shape=(1, 4, 4), name="toy")


def test_factor_kl_splits_the_elbo_kl_by_factor_and_dimension():
    torch.manual_seed(0)
    vae = VAE("vmf:2,2+normal:3", 16, hidden=(8,))
    data = _data()
    entries = factor_kl(vae, data, batch_size=25)  # 25 does not divide 60: uneven batches
    assert [(e["group"], e["family"], len(e["kl"])) for e in entries] == [
        ("S^2 × S^2", "vmf", 2),
        ("R^3", "normal", 3),  # a diagonal Gaussian: one value per dimension
    ]
    assert all(k > 0 for e in entries for k in e["kl"])
    total = sum(sum(e["kl"]) for e in entries)
    assert total == pytest.approx(score(vae, data, batch_size=25)["kl"], rel=1e-5)


def test_factor_kl_of_a_full_covariance_group_is_one_value():
    vae = VAE("normal:3", 16, hidden=(8,), covariance="full")
    (entry,) = factor_kl(vae, _data(), batch_size=60)
    assert len(entry["kl"]) == 1
    assert entry["kl"][0] > 0


def test_a_factor_at_the_concentration_floor_is_reported_unused(monkeypatch):
    """Factor 1 sits at the vMF concentration floor of the models (κ = 1, as in a collapsed run);
    factor 2 is concentrated. Only factor 1 is flagged, with its exact mean KL."""
    vae = VAE("vmf:4,4", 16, hidden=(8,))
    data = _data(40)
    loc = torch.nn.functional.normalize(torch.randn(2, 40, 5), dim=-1)
    kappa = torch.stack([torch.ones(40), torch.full((40,), 300.0)])

    def posteriors(x):
        n = x.shape[0]
        return [VonMisesFisher(loc[:, :n], kappa[:, :n])]

    monkeypatch.setattr(vae, "posteriors", posteriors)
    (entry,) = factor_kl(vae, data, batch_size=40)
    expected = kl_divergence(VonMisesFisher(loc, kappa), HypersphericalUniform(5)).mean(-1)
    assert entry["kl"] == pytest.approx(expected.tolist(), rel=1e-5)
    assert entry["kl"][0] < UNUSED_FACTOR_KL < entry["kl"][1]
    (message,) = unused_sphere_factors([entry])
    assert message == f"factor 1 of S^4 × S^4 (KL {entry['kl'][0]:.2f} nats)"


def test_gaussian_dimensions_and_flow_groups_are_never_flagged():
    entries = [
        {"group": "R^2", "family": "normal", "kl": [0.0, 3.0]},
        {"group": "S^2", "family": "vmf", "kl": None},
    ]
    assert unused_sphere_factors(entries) == []
    vae = FlowVAE("vmf:2", 16, hidden=(8,), flow="mobius:2")
    (entry,) = factor_kl(vae, _data(), batch_size=60)
    assert entry["kl"] is None  # a Möbius flow posterior has no analytic KL to split


@pytest.mark.parametrize(("latent", "columns"), [("vmf:2,2", 2), ("normal:3", 1)])
def test_householder_flow_groups_keep_their_closed_form_kl(latent, columns):
    """Reflections preserve the prior, so each sphere factor's KL is its base's (and a Gaussian with
    a Householder flow, a full-covariance Gaussian, gets one value); the values add up to the ELBO's
    KL, which is then closed form too."""
    torch.manual_seed(0)
    vae = FlowVAE(latent, 16, hidden=(8,), flow="householder:2", flow_type="amortized")
    data = _data()
    (entry,) = factor_kl(vae, data, batch_size=25)
    assert len(entry["kl"]) == columns
    assert all(k > 0 for k in entry["kl"])
    assert sum(entry["kl"]) == pytest.approx(score(vae, data, batch_size=25)["kl"], rel=1e-5)


def test_training_warns_about_unused_sphere_factors(toy_data, tmp_path, monkeypatch, capsys):
    """The run's summary keeps the per-factor KL, and a factor below the threshold is named in a
    warning that says what to try (the collapse itself is forced here: a real one needs a long run)."""
    import pyro_svae.train.loop as loop

    monkeypatch.setattr(
        loop, "unused_sphere_factors", lambda entries: unused_sphere_factors(entries, threshold=1e9)
    )
    summary = train(tiny_config(tmp_path, epochs=1), datasets=toy_data)
    assert len(summary["unused_sphere_factors"]) == 2
    err = capsys.readouterr().err
    assert "warning: 2 latent sphere factor(s) carry almost no information" in err
    assert "factor 1 of S^2 × S^2" in err
    assert "--kl-warmup" in err


def test_sphere_factors_are_counted_and_listed_in_latent_space_order():
    assert sphere_factor_count(VAE("vmf:2,2+normal:3+ps:3", 16, hidden=(8,))) == 3
    assert sphere_factor_count(VAE("vmf:4", 16, hidden=(8,))) == 1
    assert sphere_factor_count(VAE("normal:5", 16, hidden=(8,))) == 0
    # a Möbius flow posterior has no analytic KL, so its factors cannot be tracked; Householder
    # reflections keep the base's closed form, so theirs can
    assert sphere_factor_count(FlowVAE("vmf:2,2", 16, hidden=(8,), flow="mobius:2")) == 0
    assert sphere_factor_count(FlowVAE("vmf:2,2", 16, hidden=(8,), flow="householder:2")) == 2
    mixed = FlowVAE("vmf:2,2", 16, hidden=(8,), flow="householder:1+mobius:1")
    assert sphere_factor_count(mixed) == 0
    entries = [
        {"group": "S^2 × S^2", "family": "vmf", "kl": [1.0, 2.0]},
        {"group": "R^2", "family": "normal", "kl": [5.0, 6.0]},
        {"group": "S^3", "family": "ps", "kl": [3.0]},
        {"group": "S^4", "family": "vmf", "kl": None},
    ]
    assert sphere_factor_kls(entries) == [1.0, 2.0, 3.0]


def test_every_epoch_logs_the_validation_kl_of_each_sphere_factor(toy_data, tmp_path, caplog):
    """With several sphere factors each metrics row has ``val_kl_factor_<i>`` (adding up to
    ``val_kl``) and the epoch line shows them, so a collapse is visible during the run."""
    import csv
    import logging

    with caplog.at_level(logging.INFO, logger="pyro_svae.train"):
        summary = train(tiny_config(tmp_path / "product", epochs=2), datasets=toy_data)
    with open(summary["files"]["metrics_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        factors = [float(row["val_kl_factor_1"]), float(row["val_kl_factor_2"])]
        assert all(kl > 0 for kl in factors)
        assert sum(factors) == pytest.approx(float(row["val_kl"]), rel=1e-4)
    assert "val_kl_factor_3" not in rows[0]
    assert list(rows[0]).index("val_kl_factor_1") == list(rows[0]).index("val_kl") + 1
    lines = [r.getMessage() for r in caplog.records if "val ELBO" in r.getMessage()]
    assert len(lines) == 2
    assert all("val KL per factor " in line for line in lines)

    single = train(tiny_config(tmp_path / "single", latent="vmf:4", epochs=1), datasets=toy_data)
    with open(single["files"]["metrics_csv"]) as f:
        header = next(csv.reader(f))
    assert not any(name.startswith("val_kl_factor") for name in header)


def test_run_plots_get_a_panel_with_the_kl_of_each_sphere_factor(toy_data, tmp_path, monkeypatch):
    import pyro_svae.viz as viz
    from pyro_svae.train import Trainer
    from pyro_svae.train.report import CURVE_KEYS, save_run_plots

    seen = {}
    monkeypatch.setattr(viz, "save_all_plots", lambda *args, **kwargs: seen.update(kwargs) or {})
    trainer = Trainer(tiny_config(tmp_path, latent="vmf:2,2,2", epochs=1), datasets=toy_data)
    trainer.run()
    save_run_plots(trainer)
    factors = ["val_kl_factor_1", "val_kl_factor_2", "val_kl_factor_3"]
    assert seen["curve_keys"] == [*CURVE_KEYS, factors]

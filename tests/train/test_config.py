"""TrainConfig validation, JSON round trip and resume compatibility."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pyro_svae.train import TrainConfig, resume_conflicts
from pyro_svae.train.config import VALUES_BEFORE_FIELD_EXISTED
from pyro_svae.train.device import resolve_device


def test_defaults_are_valid_and_round_trip_through_json():
    config = TrainConfig(capacity=(0.0, 5.0, 10), out="runs/x")
    data = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(data) == config
    assert config.hidden == (256, 128)
    assert config.knn_labels == (100, 600, 1000)


def test_latent_is_canonicalised_and_run_dir_defaults_from_the_settings():
    config = TrainConfig(latent=" VMF:4, 4 ", seed=3)
    assert config.latent == "vmf:4,4"
    assert str(config.run_dir) == "runs/dynamic_mnist-vmf_4_4-seed3"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "cifar"}, "dataset must be one of"),
        ({"latent": "vmf:0"}, "latent: invalid latent spec"),
        ({"hidden": ()}, "hidden must be"),
        ({"hidden": (256, -1)}, "hidden must be"),
        ({"arch": "resnet"}, "arch must be"),
        ({"likelihood": "poisson"}, "likelihood must be"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": True}, "batch_size must be a positive integer"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be"),
        ({"beta": -1.0}, "beta must be"),
        ({"kl_warmup": -2}, "kl_warmup must be"),
        ({"capacity": (0.0, 5.0)}, "capacity must be"),
        ({"capacity": (0.0, -5.0, 10)}, "capacity must be"),
        ({"look_ahead": -1}, "look_ahead must be"),
        ({"lr_decay": 1.0}, "lr_decay must be a number in"),
        ({"max_train_batches": 0}, "max_train_batches must be"),
        ({"knn_labels": (0,)}, "knn_labels must be"),
        ({"device": "tpu"}, "device must be"),
        ({"covariance": "tied"}, "covariance must be"),
        ({"grad_clip": 0.0}, "grad_clip must be None"),
        ({"grad_clip": float("nan")}, "grad_clip must be"),
        ({"grad_clip_window": 0}, "grad_clip_window must be a positive integer"),
        ({"resume": True, "overwrite": True}, "resume and overwrite"),
    ],
)
def test_bad_values_raise_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown TrainConfig fields: bogus"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "bogus": 1})


def test_resume_conflicts_name_only_training_settings():
    saved = TrainConfig(out="a")
    allowed = dataclasses.replace(saved, epochs=500, look_ahead=10, ll_samples=0, progress=False)
    assert resume_conflicts(saved, allowed) == {}
    changed = dataclasses.replace(saved, lr=1e-4, latent="vmf:9")
    assert resume_conflicts(saved, changed) == {"latent": ("vmf:4,4", "vmf:9"), "lr": (1e-3, 1e-4)}


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_absent_fields_take_the_value_they_had_when_introduced(monkeypatch):
    """A saved config without a later field predates it: it is read with the field's original value
    from ``VALUES_BEFORE_FIELD_EXISTED``, not with the current default. Every later field needs one."""
    first_version = {
        "dataset", "latent", "hidden", "arch", "likelihood", "epochs", "batch_size", "lr", "beta",
        "kl_warmup", "capacity", "early_stopping_burn_in", "look_ahead", "seed", "device",
        "threads", "data_dir", "out", "resume", "overwrite", "ll_samples", "eval_batch_size",
        "max_train_batches", "max_eval_points", "max_retries", "lr_decay", "snapshot_every",
        "min_concentration", "covariance", "progress", "knn_labels",
    }  # fmt: skip
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(VALUES_BEFORE_FIELD_EXISTED) == names - first_version  # every later field listed
    old = TrainConfig(latent="normal:40", flow="planar:2").to_dict()
    for name in ("kl", "kl_gradient", "mixture_components"):
        del old[name]
    restored = TrainConfig.from_dict(old)
    assert (restored.kl, restored.kl_gradient, restored.mixture_components) == ("auto", "total", 4)
    assert (restored.latent, restored.flow) == ("normal:40", "planar:2")  # present keys win
    # the table, not the dataclass default, decides: as if "path" had been the original value
    monkeypatch.setitem(VALUES_BEFORE_FIELD_EXISTED, "kl_gradient", "path")
    assert TrainConfig().kl_gradient == "total"
    assert TrainConfig.from_dict(old).kl_gradient == "path"

"""Tiny in-memory data and configurations for the training tests."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pyro_svae.data import BinaryImageData
from pyro_svae.train import TrainConfig

STEPS_PER_EPOCH = 6  # 120 training points / batch 20


def _split(n: int, split: str, seed: int) -> BinaryImageData:
    """``n`` dynamically binarised 8x8 images around 4 class prototypes."""
    prototypes = torch.rand(4, 64, generator=torch.Generator().manual_seed(123))
    labels = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed))
    return BinaryImageData(
        prototypes[labels],
        labels,
        dynamic=True,
        image_shape=(1, 8, 8),
        name="toy",
        split=split,
        num_classes=4,
    )


@pytest.fixture(scope="session")
def toy_data() -> dict[str, BinaryImageData]:
    """train / valid / test splits of 120 / 40 / 40 toy images with labels."""
    return {
        "train": _split(120, "train", 0),
        "valid": _split(40, "valid", 1),
        "test": _split(40, "test", 2),
    }


def tiny_config(out, **changes) -> TrainConfig:
    """A configuration that trains in well under a second per epoch on the toy data."""
    base = TrainConfig(
        dataset="static_mnist",  # a label only: the tests pass the data in
        latent="vmf:2,2",
        hidden=(16,),
        epochs=2,
        batch_size=20,
        ll_samples=3,
        eval_batch_size=20,
        knn_labels=(10, 1000),
        snapshot_every=2,
        progress=False,
        out=str(out),
    )
    return dataclasses.replace(base, **changes)

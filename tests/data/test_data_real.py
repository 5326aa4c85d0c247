"""Facts about the real files ($PYRO_SVAE_DATA or ../shared/data); skipped only where absent."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pyro_svae.data import (
    DATASETS,
    SPLITS,
    BinaryImageData,
    DatasetNotFoundError,
    ImageData,
    load_dataset,
    load_splits,
    verify_files,
)


@pytest.fixture(scope="module")
def mnist(helpers: SimpleNamespace) -> dict[str, ImageData]:
    return load_splits("dynamic_mnist", SPLITS, root=helpers.require_real("dynamic_mnist"))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_checksums_match_the_registry(helpers: SimpleNamespace, name: str) -> None:
    root = helpers.require_real(name)
    assert verify_files(name, root) == dict.fromkeys((f.name for f in DATASETS[name].files), True)


def test_dynamic_mnist(mnist: dict[str, ImageData]) -> None:
    sizes = {k: len(v) for k, v in mnist.items()}
    assert sizes == {"train": 50000, "valid": 10000, "test": 10000, "train+valid": 60000}
    train, tv = mnist["train"], mnist["train+valid"]
    assert isinstance(train, BinaryImageData)
    assert train.dynamic
    assert train.images.shape[1] == 784
    assert train.images.min() == 0
    assert train.images.max() == 1
    levels = train.images[:2000].flatten() * 255  # grey levels k / 255, kept for the draws
    assert (levels - levels.round()).abs().max() < 1e-4
    assert len(levels.round().long().bincount()) == 256
    assert (
        abs(tv.images.mean().item() - 0.13066) < 1e-4
    )  # MNIST's well-known pixel mean 33.32 / 255
    assert torch.equal(
        tv.labels.bincount(),
        torch.tensor([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]),
    )
    assert torch.equal(mnist["test"].labels[:10], torch.tensor([7, 2, 1, 0, 4, 1, 4, 9, 5, 9]))


def test_dynamic_mnist_split_disjoint_and_seeded(
    mnist: dict[str, ImageData], real_root: Path
) -> None:
    train, valid = mnist["train"].source_indices, mnist["valid"].source_indices
    assert not set(train.tolist()) & set(valid.tolist())
    assert sorted(torch.cat([train, valid]).tolist()) == list(range(60000))
    again = load_dataset("dynamic_mnist", "valid", root=real_root, seed=0, binarize="none")
    assert torch.equal(again.source_indices, valid)
    other = load_dataset("dynamic_mnist", "valid", root=real_root, seed=1, binarize="none")
    assert len(set(other.source_indices.tolist()) & set(valid.tolist())) < 3000  # ~1667 by chance


def test_dynamic_binarisation(mnist: dict[str, ImageData]) -> None:
    train = mnist["train"]
    idx = torch.arange(5000)
    g = torch.Generator().manual_seed(0)
    a, b = train.draw(idx, g), train.draw(idx, g)
    assert ((a == 0) | (a == 1)).all()
    assert (a != b).float().mean() > 0.02  # fresh draws, not a threshold
    grey = train.images[:5000].mean().item()
    assert abs(a.mean().item() - grey) < 2e-3
    assert abs(b.mean().item() - grey) < 2e-3
    x, _, _ = next(iter(train.batches(100, generator=torch.Generator().manual_seed(1))))
    assert x.shape == (100, 784)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    # valid / test: one fixed-seed Bernoulli draw, the same in every run
    valid = mnist["valid"]
    assert not valid.dynamic
    assert ((valid.images == 0) | (valid.images == 1)).all()
    assert abs(valid.images.mean().item() - 0.1303) < 2e-3


def test_static_mnist(helpers: SimpleNamespace) -> None:
    out = load_splits("static_mnist", root=helpers.require_real("static_mnist"))
    assert {k: len(v) for k, v in out.items()} == {"train": 50000, "valid": 10000, "test": 10000}
    for data in out.values():
        assert not data.dynamic
        assert data.labels is None
        assert ((data.images == 0) | (data.images == 1)).all()
        assert abs(data.images.mean().item() - 0.1306) < 3e-3
    assert torch.equal(out["valid"].source_indices, torch.arange(50000, 60000))


def test_fashion_mnist(helpers: SimpleNamespace) -> None:
    root = helpers.require_real("fashion_mnist")
    out = load_splits("fashion_mnist", SPLITS, root=root, binarize="none")
    assert {k: len(v) for k, v in out.items()} == {
        "train": 50000,
        "valid": 10000,
        "test": 10000,
        "train+valid": 60000,
    }
    assert all(type(d) is ImageData for d in out.values())  # grey
    assert torch.equal(out["train+valid"].labels.bincount(), torch.full((10,), 6000))
    assert torch.equal(out["test"].labels.bincount(), torch.full((10,), 1000))
    assert abs(out["train+valid"].images.mean().item() - 0.2860) < 1e-3


def test_caltech101_silhouettes(helpers: SimpleNamespace) -> None:
    out = load_splits("caltech101", root=helpers.require_real("caltech101"))
    assert {k: len(v) for k, v in out.items()} == {"train": 4100, "valid": 2264, "test": 2307}
    train = out["train"]
    assert ((train.images == 0) | (train.images == 1)).all()
    assert torch.equal(train.labels.unique(), torch.arange(101))
    images = train.images.reshape(-1, 28, 28)
    # fed as 1 - x: the silhouette is 1, the background (the whole border, nearly) is 0
    assert abs(train.images.mean().item() - 0.4489) < 1e-3
    border = torch.cat([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    assert border.mean() < 0.05
    # column-major storage undone: class 0, "Airplanes Side 2", is wider than tall
    airplane = images[train.labels == 0].mean(0)
    rows, cols = (airplane.mean(1) > 0.2).sum(), (airplane.mean(0) > 0.2).sum()
    assert cols > rows + 4


def test_frey_faces(helpers: SimpleNamespace) -> None:
    root = helpers.require_real("frey_faces")
    out = load_splits("frey_faces", root=root)
    assert {k: len(v) for k, v in out.items()} == {"train": 1565, "valid": 200, "test": 200}
    assert out["train"].image_shape == (1, 28, 20)
    assert out["train"].dim == 560
    every = torch.cat([d.source_indices for d in out.values()])
    assert sorted(every.tolist()) == list(range(1965))
    again = load_splits("frey_faces", root=root)
    assert all(torch.equal(out[k].source_indices, again[k].source_indices) for k in out)
    faces = torch.cat([d.images for d in out.values()])
    assert faces.min() == 8 / 255
    assert faces.max() == 238 / 255
    assert type(out["test"]) is ImageData
    # row-major 28 x 20 frames: a face is nearly left-right symmetric, not up-down
    im = faces.reshape(-1, 28, 20)[:200].numpy()
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    left_right = np.mean([corr(a, a[:, ::-1]) for a in im])
    up_down = np.mean([corr(a, a[::-1, :]) for a in im])
    assert left_right > 0.5 > up_down


def test_omniglot(helpers: SimpleNamespace) -> None:
    out = load_splits("omniglot", root=helpers.require_real("omniglot"))
    assert {k: len(v) for k, v in out.items()} == {"train": 23000, "valid": 1345, "test": 8070}
    assert torch.equal(out["train"].labels.unique(), torch.arange(50))
    assert out["train"].dynamic
    assert not out["test"].dynamic


def test_missing_real_dataset_error(real_root: Path) -> None:
    if (real_root / "OMNIGLOT" / "chardata.mat").is_file():
        pytest.skip("OMNIGLOT is present in this data root")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("omniglot", root=real_root, download=False)
    msg = str(err.value)
    assert f"not found in {real_root / 'OMNIGLOT'}" in msg
    assert "- chardata.mat" in msg

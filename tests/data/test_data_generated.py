"""Every dataset read from small generated files in the real formats (runs in every environment)."""

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
    ImageData,
    load_dataset,
    load_splits,
    verify_files,
)
from pyro_svae.data.__main__ import main

NAMES = sorted(DATASETS)


def _as_images(data: ImageData) -> np.ndarray:
    return data.images.reshape(len(data), *data.image_shape[1:]).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_every_split_of_every_dataset(fake: SimpleNamespace, helpers, name: str) -> None:
    spec, sizes = DATASETS[name], helpers.SMALL_SIZES[name]
    out = load_splits(name, SPLITS, root=fake.root, download=False)
    for split in ("train", "valid", "test"):
        data = out[split]
        assert len(data) == sizes[split]
        assert data.images.shape == (sizes[split], spec.dim)
        assert data.images.dtype == torch.float32
        assert data.image_shape == spec.image_shape
        assert data.split == split
        assert data.name == name
        assert data.images.min() >= 0
        assert data.images.max() <= 1
        assert (data.labels is None) == (not spec.has_labels)
        if data.labels is not None:
            assert data.labels.dtype == torch.int64
            assert data.labels.shape == (len(data),)
            assert data.labels.min() >= 0
            assert data.labels.max() < spec.num_classes
        assert isinstance(data, BinaryImageData) == (spec.likelihood == "bernoulli")
    tv = out["train+valid"]
    assert len(tv) == sizes["train"] + sizes["valid"]
    both = torch.cat([out["train"].source_indices, out["valid"].source_indices])
    assert sorted(both.tolist()) == tv.source_indices.tolist()


@pytest.mark.parametrize("name", ["dynamic_mnist", "fashion_mnist"])
def test_idx_content_labels_and_orientation(fake: SimpleNamespace, name: str) -> None:
    images, labels = fake.truth[name]["train"]
    data = load_dataset(name, "valid", root=fake.root, binarize="none", download=False)
    assert type(data) is ImageData  # grey
    idx = data.source_indices.numpy()
    np.testing.assert_allclose(_as_images(data), images[idx] / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.labels.numpy(), labels[idx])
    test = load_dataset(name, "test", root=fake.root, binarize="none", download=False)
    np.testing.assert_allclose(_as_images(test), fake.truth[name]["t10k"][0] / 255.0, atol=1e-7)
    assert (_as_images(test)[:, :, :3] == 0).all()  # the blank left margin stays left


def test_gzipped_idx_files_are_decompressed(
    tmp_path: Path, small_registry, no_network, helpers
) -> None:
    truth = helpers.write_fake_root(tmp_path, gz_mnist=True)
    assert not (tmp_path / "MNIST/raw/train-images-idx3-ubyte").exists()
    data = load_dataset("dynamic_mnist", "test", root=tmp_path, binarize="none", download=False)
    np.testing.assert_allclose(
        _as_images(data), truth["dynamic_mnist"]["t10k"][0] / 255.0, atol=1e-7
    )


def test_static_mnist_official_splits_in_file_order(fake: SimpleNamespace) -> None:
    out = load_splits("static_mnist", SPLITS, root=fake.root, download=False)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(out[split].images.numpy(), fake.truth["static_mnist"][split])
        assert not out[split].dynamic
    tv = np.concatenate([fake.truth["static_mnist"][k] for k in ("train", "valid")])
    np.testing.assert_array_equal(out["train+valid"].images.numpy(), tv)


def test_omniglot_orientation_labels_and_split(fake: SimpleNamespace, helpers) -> None:
    images, alphabets = fake.truth["omniglot"]["train"]
    out = load_splits("omniglot", root=fake.root, binarize="none", download=False)
    valid = out["valid"]
    assert len(valid) == helpers.SMALL_SIZES["omniglot"]["valid"]
    idx = valid.source_indices.numpy()
    np.testing.assert_allclose(_as_images(valid), images[idx], atol=1e-6)  # row-major again
    np.testing.assert_array_equal(valid.labels.numpy(), alphabets[idx])
    test_images, test_alphabets = fake.truth["omniglot"]["test"]
    np.testing.assert_allclose(_as_images(out["test"]), test_images, atol=1e-6)
    np.testing.assert_array_equal(out["test"].labels.numpy(), test_alphabets)


def test_caltech_is_flipped_so_the_silhouette_is_one(fake: SimpleNamespace) -> None:
    out = load_splits("caltech101", root=fake.root, download=False)
    for split in ("train", "valid", "test"):
        silhouettes, labels = fake.truth["caltech101"][split]
        np.testing.assert_array_equal(_as_images(out[split]), silhouettes)
        np.testing.assert_array_equal(out[split].labels.numpy(), labels)
    assert out["train"].images.mean() < 0.5  # the wide bar (1) is smaller than the background (0)


def test_frey_faces_layout_and_seeded_three_way_split(fake: SimpleNamespace) -> None:
    out = load_splits("frey_faces", root=fake.root, download=False)
    faces = fake.truth["frey_faces"]
    for split in ("train", "valid", "test"):
        data = out[split]
        assert type(data) is ImageData
        assert data.image_shape == (1, 28, 20)
        idx = data.source_indices.numpy()
        np.testing.assert_allclose(_as_images(data), faces[idx] / 255.0, atol=1e-7)
    every = torch.cat([out[s].source_indices for s in ("train", "valid", "test")])
    assert sorted(every.tolist()) == list(range(len(faces)))


@pytest.mark.parametrize("name", ["dynamic_mnist", "omniglot", "frey_faces"])
def test_seeded_splits_reproducible_and_disjoint(fake: SimpleNamespace, name: str) -> None:
    a = load_splits(name, root=fake.root, download=False, seed=0)
    b = load_splits(name, root=fake.root, download=False, seed=0)
    c = load_splits(name, root=fake.root, download=False, seed=1)
    for split in ("train", "valid"):
        assert torch.equal(a[split].source_indices, b[split].source_indices)
    assert not torch.equal(a["valid"].source_indices, c["valid"].source_indices)
    assert not set(a["train"].source_indices.tolist()) & set(a["valid"].source_indices.tolist())


def test_binarisation_modes(fake: SimpleNamespace) -> None:
    out = load_splits("dynamic_mnist", SPLITS, root=fake.root, download=False)
    assert out["train"].dynamic
    assert out["train+valid"].dynamic
    assert not out["valid"].dynamic
    assert not out["test"].dynamic
    again = load_splits("dynamic_mnist", ("valid", "test"), root=fake.root, download=False)
    for split in ("valid", "test"):
        assert set(out[split].images.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(out[split].images, again[split].images)
    grey = load_dataset("dynamic_mnist", "test", root=fake.root, binarize="none", download=False)
    assert abs(out["test"].images.mean() - grey.images.mean()) < 0.03
    dyn = load_dataset("dynamic_mnist", "test", root=fake.root, binarize="dynamic", download=False)
    assert torch.equal(dyn.images, grey.images)
    assert dyn.dynamic
    with pytest.raises(ValueError, match="already binary"):
        load_dataset("caltech101", root=fake.root, binarize="dynamic", download=False)
    with pytest.raises(ValueError, match="binarize must be None or one of"):
        load_dataset("dynamic_mnist", root=fake.root, binarize="threshold", download=False)


def test_bad_names(fake: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known: caltech101"):
        load_dataset("mnist", root=fake.root)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_dataset("static_mnist", "validation", root=fake.root)


def test_root_from_environment(fake: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRO_SVAE_DATA", str(fake.root))
    assert len(load_dataset("frey_faces", "valid", download=False)) == 5


def test_cli(fake: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(fake.root), "--no-download", "static_mnist", "frey_faces"]) == 0
    out = capsys.readouterr().out
    assert "static_mnist: 30/10/12" in out
    assert "one train epoch at batch 100" in out


def test_verify_files(fake: SimpleNamespace) -> None:
    assert verify_files("frey_faces", fake.root) == {"frey_rawface.mat": False}  # not the real one
    (fake.root / "FreyFaces" / "frey_rawface.mat").unlink()
    assert verify_files("frey_faces", fake.root) == {"frey_rawface.mat": None}

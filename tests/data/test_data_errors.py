"""Error messages: missing files (with and without a download attempt) and corrupt files."""

from __future__ import annotations

import pickle
import time
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torchvision.datasets.mnist

import pyro_svae.data.files as files
from pyro_svae.data import DatasetCorruptError, DatasetNotFoundError, load_dataset


def _offline(*args, **kwargs):
    raise urllib.error.URLError("offline (test)")


@pytest.fixture
def mini(tmp_path: Path, small_registry, helpers) -> SimpleNamespace:
    """Generated files, with the real download code in place (network calls patched per test)."""
    root = tmp_path / "data"
    return SimpleNamespace(root=root, truth=helpers.write_fake_root(root))


def test_missing_file_names_dataset_files_folder_and_remedy(mini: SimpleNamespace) -> None:
    folder = mini.root / "BinarizedMNIST"
    (folder / "binarized_mnist_train.amat").unlink()
    (folder / "binarized_mnist_valid.amat").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("static_mnist", "valid", root=mini.root, download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "dataset 'static_mnist'" in msg
    assert f"not found in {folder}" in msg
    assert "- binarized_mnist_train.amat" in msg
    assert "- binarized_mnist_valid.amat" in msg
    assert "binarized_mnist_test.amat" not in msg  # the test file is not needed, and present
    assert "download=False" in msg
    assert "PYRO_SVAE_DATA" in msg
    assert "--data-dir" in msg
    assert "larocheh/public/datasets/binarized_mnist/binarized_mnist_train.amat" in msg
    assert f"Data root in use: {mini.root}" in msg
    assert err.value.missing == ("binarized_mnist_train.amat", "binarized_mnist_valid.amat")
    assert err.value.folder == folder
    assert err.value.dataset == "static_mnist"
    assert len(load_dataset("static_mnist", "test", root=mini.root, download=False)) == 12


def test_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"chardata\.mat") as err:
        load_dataset("omniglot", root=tmp_path, download=False)
    assert str(tmp_path / "OMNIGLOT") in str(err.value)


def test_errors_survive_pickling(tmp_path: Path) -> None:  # e.g. raised in a worker process
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("caltech101", root=tmp_path, download=False)
    again = pickle.loads(pickle.dumps(err.value))
    assert type(again) is DatasetNotFoundError
    assert str(again) == str(err.value)
    assert again.missing == err.value.missing
    corrupt = DatasetCorruptError(tmp_path / "f.mat", "bad header", "caltech101")
    assert str(pickle.loads(pickle.dumps(corrupt))) == str(corrupt)


def test_failed_download_falls_back_to_the_clear_error(
    mini: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = mini.root / "FreyFaces" / "frey_rawface.mat"
    target.unlink()

    def partial_then_offline(url, root, filename=None, md5=None):
        assert url == "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
        assert md5 is None
        (Path(root) / filename).write_bytes(b"partial")
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(files, "download_url", partial_then_offline)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="Download failed: URLError") as err:
        load_dataset("frey_faces", root=mini.root, download=True)
    assert time.perf_counter() - start < 5
    assert "frey_rawface.mat" in str(err.value)
    assert not target.exists()  # no partial file left behind


def test_successful_download_is_used(
    mini: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = mini.root / "Caltech101Silhouettes" / "caltech101_silhouettes_28_split1.mat"
    content = target.read_bytes()
    target.unlink()
    calls = []

    def fake_download(url, root, filename=None, md5=None):
        calls.append((url, md5))
        (Path(root) / filename).write_bytes(content)

    monkeypatch.setattr(files, "download_url", fake_download)
    assert len(load_dataset("caltech101", "test", root=mini.root)) == 12
    assert calls == [
        (
            "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",
            "4483e9c14b188fd09937f9ea6f9ea777",
        )
    ]


def test_torchvision_download_failure(
    mini: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    (mini.root / "FashionMNIST/raw/t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", _offline)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", "test", root=mini.root, download=True)
    msg = str(err.value)
    assert "Download failed: RuntimeError: Error downloading" in msg
    assert "offline (test)" in msg
    assert "- t10k-labels-idx1-ubyte" in msg
    assert "- train-images" not in msg
    assert str(mini.root / "FashionMNIST" / "raw") in msg


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _drop_last_line(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def _bad_label(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8] = 10
    path.write_bytes(bytes(data))


def _resave(path: Path, **changes) -> None:
    raw = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    raw.update(changes)
    for key, value in changes.items():
        if value is None:
            del raw[key]
    scipy.io.savemat(path, raw)


@pytest.mark.parametrize(
    ("name", "file", "damage", "message"),
    [
        ("dynamic_mnist", "MNIST/raw/train-images-idx3-ubyte", _truncate, "(truncated?)"),
        ("dynamic_mnist", "MNIST/raw/train-labels-idx1-ubyte", _bad_label, "labels has values in"),
        (
            "static_mnist",
            "BinarizedMNIST/binarized_mnist_valid.amat",
            _drop_last_line,
            "9 rows, expected 10",
        ),
        (
            "caltech101",
            "Caltech101Silhouettes/caltech101_silhouettes_28_split1.mat",
            lambda p: _resave(p, val_data=np.full((10, 784), 2, dtype=np.uint8)),
            "val_data has values in [2, 2]",
        ),
        (
            "caltech101",
            "Caltech101Silhouettes/caltech101_silhouettes_28_split1.mat",
            lambda p: _resave(p, train_labels=None),
            "variable(s) train_labels missing",
        ),
        (
            "frey_faces",
            "FreyFaces/frey_rawface.mat",
            lambda p: _resave(p, ff=np.zeros((20, 28 * 25), dtype=np.uint8)),
            "'ff' has shape (20, 700), expected (560, 25)",
        ),
        (
            "omniglot",
            "OMNIGLOT/chardata.mat",
            lambda p: _resave(p, target=np.zeros((50, 53))),
            "target is not one-hot",
        ),
        ("omniglot", "OMNIGLOT/chardata.mat", lambda p: p.write_bytes(b"\0" * 300), "MATLAB"),
    ],
)
def test_corrupt_files(mini: SimpleNamespace, name: str, file: str, damage, message: str) -> None:
    damage(mini.root / file)
    with pytest.raises(DatasetCorruptError) as err:
        load_dataset(name, "train", root=mini.root, download=False)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert msg.startswith(f"dataset {name!r}: corrupt or unexpected file {mini.root / file}")
    assert message in msg
    assert "download it again" in msg

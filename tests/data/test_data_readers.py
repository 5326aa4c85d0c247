"""The format readers on small generated files: IDX, .amat, .mat, and their corruption errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io

from pyro_svae.data import DatasetCorruptError
from pyro_svae.data.readers import check_idx_file, check_values, read_amat, read_mat


@pytest.fixture
def idx_images(tmp_path: Path, helpers: SimpleNamespace) -> Path:
    images = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28).astype(np.uint8)
    return helpers.write_idx(tmp_path / "train-images-idx3-ubyte", images)


def test_idx_good(idx_images: Path, tmp_path: Path, helpers: SimpleNamespace) -> None:
    check_idx_file(idx_images, kind="images", count=5)
    labels = helpers.write_idx(tmp_path / "labels", np.arange(5, dtype=np.uint8))
    check_idx_file(labels, kind="labels", count=5)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b"\x00\x00\x08\x01" + b[4:], "bad IDX magic number 0x00000801"),
        (lambda b: b[:-10], "needs 3936 (truncated?)"),
        (lambda b: b + b"\x00", "3937 bytes"),
        (lambda b: b[:6], "shorter than an IDX header"),
        (lambda b: b"\x1f\x8b\x08\x00" + b[4:], "gzip-compressed"),
    ],
)
def test_idx_corrupt(idx_images: Path, damage, message: str) -> None:
    idx_images.write_bytes(damage(idx_images.read_bytes()))
    with pytest.raises(DatasetCorruptError, match="corrupt or unexpected file") as err:
        check_idx_file(idx_images, kind="images", count=5)
    assert message in str(err.value)
    assert str(idx_images) in str(err.value)


def test_idx_wrong_count_or_kind(idx_images: Path) -> None:
    with pytest.raises(
        DatasetCorruptError, match=r"gives shape \(5, 28, 28\), expected \(6, 28, 28\)"
    ):
        check_idx_file(idx_images, kind="images", count=6)
    with pytest.raises(DatasetCorruptError, match="an IDX file of labels"):
        check_idx_file(idx_images, kind="labels", count=5)


@pytest.mark.parametrize("messy", [False, True])
def test_amat_round_trip(tmp_path: Path, helpers: SimpleNamespace, messy: bool) -> None:
    rows = (np.random.default_rng(0).random((7, 784)) < 0.5).astype(np.uint8)
    path = tmp_path / "x.amat"
    helpers.write_amat(path, rows, messy=messy)
    out = read_amat(path, n_cols=784)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rows)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 1 0\n1 1\n", "row 2 has 2 values, expected 3"),
        ("0 1 0\n1 2 0\n", "line 2 has the character '2'; values must be 0 or 1"),
        ("0 1 0\n0.5 1 0\n", "line 2 has the character '.'"),
        ("0 1 10\n1 1 0\n", "single digits 0 or 1"),
        ("\n \n", "no rows"),
    ],
)
def test_amat_corrupt(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.amat"
    path.write_text(text)
    with pytest.raises(DatasetCorruptError, match="corrupt or unexpected file") as err:
        read_amat(path, n_cols=3)
    assert message in str(err.value)


def test_mat_good_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"a": np.zeros((3, 4)), "b": np.ones((2, 1))})
    out = read_mat(path, {"a": (3, 4), "b": (2, 1)})
    assert out["a"].shape == (3, 4)
    with pytest.raises(DatasetCorruptError, match=r"variable\(s\) c missing \(it has: a, b\)"):
        read_mat(path, {"a": (3, 4), "c": (1, 1)})
    with pytest.raises(DatasetCorruptError, match=r"'a' has shape \(3, 4\), expected \(4, 3\)"):
        read_mat(path, {"a": (4, 3)})
    path.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(DatasetCorruptError, match="not a readable MATLAB file"):
        read_mat(path, {"a": (3, 4)})


def test_check_values(tmp_path: Path) -> None:
    p = tmp_path / "f"
    check_values(p, "x", np.array([0.0, 0.5, 1.0]), low=0, high=1)
    with pytest.raises(DatasetCorruptError, match=r"x has values in \[0.0, 1.5\]"):
        check_values(p, "x", np.array([0.0, 1.5]), low=0, high=1)
    with pytest.raises(DatasetCorruptError, match="values in"):
        check_values(p, "x", np.array([0.0, np.nan]), low=0, high=1)
    with pytest.raises(DatasetCorruptError, match="non-integer"):
        check_values(p, "x", np.array([0.0, 0.5]), low=0, high=1, integer=True)

"""Fixtures for the dataset tests: the real data folder, and small generated files in its formats.

The real files are looked for in ``$PYRO_SVAE_DATA``, else ``<repo>/../shared/data``; tests on them
are skipped only where a dataset's files are absent. The generated files (``fake``) exercise every
reader everywhere: they are written in the real formats and orientations from known row-major
images, so a round trip checks the layout conventions too.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io

from pyro_svae.data import DATASETS
from pyro_svae.data.files import dataset_folder

_REPO = Path(__file__).resolve().parents[2]


def _real_root() -> Path | None:
    env = os.environ.get("PYRO_SVAE_DATA", "").strip()
    if env:
        return Path(env).expanduser() if Path(env).expanduser().is_dir() else None
    shared = _REPO.parent / "shared" / "data"
    return shared if shared.is_dir() else None


REAL_ROOT = _real_root()


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The folder with the real files (skips when there is none)."""
    if REAL_ROOT is None:
        pytest.skip("no real data folder ($PYRO_SVAE_DATA or ../shared/data)")
    return REAL_ROOT


def require_real(name: str) -> Path:
    """The real data root if it holds every file of dataset ``name``; skips the test otherwise."""
    if REAL_ROOT is None:
        pytest.skip("no real data folder ($PYRO_SVAE_DATA or ../shared/data)")
    folder = dataset_folder(DATASETS[name], REAL_ROOT)
    missing = [f.name for f in DATASETS[name].files if not (folder / f.name).is_file()]
    if missing:
        pytest.skip(f"real {name} files absent from {folder}: {', '.join(missing)}")
    return REAL_ROOT


@pytest.fixture
def real(request: pytest.FixtureRequest) -> Path:
    """``require_real(<dataset>)`` for a test parametrised indirectly with the dataset's name."""
    return require_real(request.param)


# --- small files in the real formats -------------------------------------------------------------

SMALL_SIZES = {
    "dynamic_mnist": {"train": 48, "valid": 12, "test": 20},
    "fashion_mnist": {"train": 48, "valid": 12, "test": 20},
    "static_mnist": {"train": 30, "valid": 10, "test": 12},
    "omniglot": {"train": 40, "valid": 13, "test": 20},
    "caltech101": {"train": 25, "valid": 10, "test": 12},
    "frey_faces": {"train": 15, "valid": 5, "test": 5},
}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0803 for images, 0x0801 for labels)."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_amat(path: Path, rows: np.ndarray, *, messy: bool = False) -> None:
    """Write 0/1 rows as ``.amat`` text: the standard "v v ... v\\n", or CRLF / tabs / blanks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if messy:
        lines = ["  " + "\t ".join(str(int(v)) for v in row) + "  \r\n" for row in rows]
        path.write_text("".join(lines) + "\r\n", newline="")
    else:
        path.write_text("".join(" ".join(str(int(v)) for v in row) + "\n" for row in rows))


def column_major(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images -> (N, H*W) rows flattened column-major, as MATLAB stores them."""
    return np.transpose(images, (0, 2, 1)).reshape(images.shape[0], -1)


def _mnist_like(folder: Path, rng: np.random.Generator, n: dict, gz: bool) -> dict:
    truth = {}
    for prefix, count in (("train", n["train"] + n["valid"]), ("t10k", n["test"])):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[:, :, :3] = 0  # a blank left margin, to see the orientation
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
        truth[prefix] = (images, labels)
    return truth


def write_fake_root(root: Path, *, gz_mnist: bool = False) -> dict:
    """Write all six datasets with SMALL_SIZES under ``root``; return the row-major truth."""
    rng = np.random.default_rng(1234)
    truth: dict = {}
    for name in ("dynamic_mnist", "fashion_mnist"):
        truth[name] = _mnist_like(root / DATASETS[name].folder, rng, SMALL_SIZES[name], gz_mnist)

    n = SMALL_SIZES["static_mnist"]
    truth["static_mnist"] = {}
    for split in ("train", "valid", "test"):
        rows = (rng.random((n[split], 784)) < 0.3).astype(np.uint8)
        write_amat(root / "BinarizedMNIST" / f"binarized_mnist_{split}.amat", rows)
        truth["static_mnist"][split] = rows

    n = SMALL_SIZES["omniglot"]
    omni = {}
    for key, count in (("", n["train"] + n["valid"]), ("test", n["test"])):
        images = rng.random((count, 28, 28))
        images[:, :4, :] = 0.0  # a blank top margin
        alphabet = rng.integers(0, 50, size=count)
        omni[f"{key}data"] = column_major(images).T
        omni[f"{key}target"] = np.eye(50)[:, alphabet]
        omni[f"{key}targetchar"] = rng.integers(1, 56, size=(1, count)).astype(float)
        truth.setdefault("omniglot", {})[key or "train"] = (images, alphabet)
    (root / "OMNIGLOT").mkdir(parents=True)
    scipy.io.savemat(root / "OMNIGLOT" / "chardata.mat", omni)

    n = SMALL_SIZES["caltech101"]
    cal = {"classnames": np.array([[f"class {k}" for k in range(101)]], dtype=object)}
    truth["caltech101"] = {}
    for split, key in (("train", "train"), ("valid", "val"), ("test", "test")):
        silhouettes = np.zeros((n[split], 28, 28), dtype=np.uint8)
        silhouettes[:, 10:18, 2:26] = 1  # wide bars: 1 = silhouette, as the loader returns them
        flips = rng.random(silhouettes.shape) < 0.05
        silhouettes ^= flips.astype(np.uint8)
        labels = rng.integers(1, 102, size=(n[split], 1)).astype(np.uint8)
        cal[f"{key}_data"] = column_major(1 - silhouettes)  # stored with 1 = background
        cal[f"{key}_labels"] = labels
        truth["caltech101"][split] = (silhouettes, labels[:, 0].astype(np.int64) - 1)
    (root / "Caltech101Silhouettes").mkdir(parents=True)
    scipy.io.savemat(root / "Caltech101Silhouettes" / "caltech101_silhouettes_28_split1.mat", cal)

    n = SMALL_SIZES["frey_faces"]
    faces = rng.integers(0, 256, size=(sum(n.values()), 28, 20), dtype=np.uint8)
    faces[:, :, :2] = 0
    (root / "FreyFaces").mkdir(parents=True)
    scipy.io.savemat(root / "FreyFaces" / "frey_rawface.mat", {"ff": faces.reshape(-1, 560).T})
    truth["frey_faces"] = faces
    return truth


@pytest.fixture
def small_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink every registry entry's split sizes to SMALL_SIZES (for the generated files)."""
    for name, sizes in SMALL_SIZES.items():
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], split_sizes=sizes))


@pytest.fixture
def fake(tmp_path: Path, small_registry: None, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A data root of small generated files for all six datasets; downloads are made to fail."""
    _no_network(monkeypatch)
    root = tmp_path / "data"
    return SimpleNamespace(root=root, truth=write_fake_root(root))


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    import pyro_svae.data.files as files

    monkeypatch.setattr(files, "_download", refuse)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any download attempt fail at once."""
    _no_network(monkeypatch)


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The writers and helpers above, for tests (conftest modules are not imported directly)."""
    return SimpleNamespace(
        SMALL_SIZES=SMALL_SIZES,
        column_major=column_major,
        require_real=require_real,
        write_amat=write_amat,
        write_fake_root=write_fake_root,
        write_idx=write_idx,
    )

"""``load_dataset``: read a dataset's files, split them, binarise them, hold them in memory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .batches import bernoulli
from .errors import DatasetCorruptError
from .files import ensure_files
from .imagedata import BinaryImageData, ImageData
from .readers import check_idx_file, check_values, read_amat, read_mat, read_torchvision_mnist
from .registry import SPLITS, DatasetSpec, get_spec
from .root import resolve_data_root
from .splits import split_indices

__all__ = ["BINARIZE_MODES", "FIXED_BINARIZATION_SEED", "load_dataset", "load_splits"]

BINARIZE_MODES = ("dynamic", "fixed", "none")
FIXED_BINARIZATION_SEED = 777  # + 0, 1, 2, 3 for train, valid, test, train+valid


@dataclass
class _Part:
    """One source array: the training file(s) or the test file, as floats in [0, 1]."""

    images: torch.Tensor
    labels: torch.Tensor | None


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    binarize: str | None = None,
    download: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> ImageData:
    """One split of a benchmark dataset, in memory.

    Args:
        name: a key of :data:`~pyro_svae.data.DATASETS`: ``"dynamic_mnist"``, ``"static_mnist"``,
            ``"fashion_mnist"``, ``"omniglot"``, ``"caltech101"`` or ``"frey_faces"``.
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"train+valid"``.
        root: the data root; ``None`` for :func:`~pyro_svae.data.default_data_root`.
        binarize: for grey datasets, ``"dynamic"`` (a fresh Bernoulli(pixel) draw at every draw of a
            batch), ``"fixed"`` (one Bernoulli draw of the split's images under a seed fixed per
            split, :data:`FIXED_BINARIZATION_SEED` + 0, 1, 2, 3 for train, valid, test,
            train+valid: the same data in every run) or ``"none"`` (grey values);
            binary datasets only take ``"none"``. ``None``: the dataset's default (dynamic for
            training splits and fixed for valid / test of MNIST, Fashion-MNIST and OMNIGLOT, grey
            for Frey Faces).
        download: fetch missing files (into the data root) before giving up.
        seed: seed of the shuffled splits (see ``DatasetSpec.shuffled``); ignored by the others.
        device: where the tensors are put.

    Returns:
        :class:`BinaryImageData` (Bernoulli likelihood) or :class:`ImageData` (grey).

    Raises:
        DatasetNotFoundError: files missing and not downloaded.
        DatasetCorruptError: a file of the wrong size, header, shape or values.
    """
    return load_splits(
        name, (split,), root=root, binarize=binarize, download=download, seed=seed, device=device
    )[split]


def load_splits(
    name: str,
    splits: Sequence[str] = ("train", "valid", "test"),
    *,
    root: str | os.PathLike[str] | None = None,
    binarize: str | None = None,
    download: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, ImageData]:
    """Several splits of one dataset, reading each file once; arguments as :func:`load_dataset`."""
    spec = get_spec(name)
    splits = tuple(splits)
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    modes = {split: _binarize_mode(spec, split, binarize) for split in splits}
    parts_needed = tuple(sorted({_part_of(spec, split) for split in splits}, reverse=True))
    folder = ensure_files(spec, root, parts_needed, download=download)
    try:
        parts = _READERS[spec.name](spec, folder, resolve_data_root(root), parts_needed)
    except DatasetCorruptError as err:
        raise err.with_dataset(spec.name) from err
    indices = _split_plan(spec, seed)
    out = {}
    for split in splits:
        part, idx = _part_of(spec, split), indices[split]
        images, labels = parts[part].images.index_select(0, idx), parts[part].labels
        if modes[split] == "fixed":
            seed_fixed = FIXED_BINARIZATION_SEED + SPLITS.index(split)
            images = bernoulli(images, torch.Generator().manual_seed(seed_fixed))
        kwargs = {
            "image_shape": spec.image_shape,
            "name": spec.name,
            "split": split,
            "num_classes": spec.num_classes,
            "source_indices": idx,
        }
        labels = None if labels is None else labels[idx]
        if modes[split] == "none" and spec.grey:
            data = ImageData(images, labels, **kwargs)
        else:
            data = BinaryImageData(images, labels, dynamic=modes[split] == "dynamic", **kwargs)
        out[split] = data.to(device)
    return out


def _binarize_mode(spec: DatasetSpec, split: str, binarize: str | None) -> str:
    mode = spec.default_binarize[split] if binarize is None else binarize
    if mode not in BINARIZE_MODES:
        raise ValueError(f"binarize must be None or one of {BINARIZE_MODES}, got {binarize!r}")
    if not spec.grey and mode != "none":
        raise ValueError(f"{spec.name} is already binary: binarize must be None or 'none'")
    return mode


def _part_of(spec: DatasetSpec, split: str) -> str:
    return "test" if split == "test" and "test" not in spec.shuffled else "train"


def _split_plan(spec: DatasetSpec, seed: int) -> dict[str, torch.Tensor]:
    sizes = spec.split_sizes
    if spec.shuffled:
        out = split_indices({k: sizes[k] for k in spec.shuffled}, shuffle=True, seed=seed)
    else:
        out = split_indices({"train": sizes["train"], "valid": sizes["valid"]}, shuffle=False)
    out["train+valid"] = torch.cat([out["train"], out["valid"]]).sort().values
    out.setdefault("test", torch.arange(sizes["test"]))
    return out


def _source_size(spec: DatasetSpec, part: str) -> int:
    s = spec.split_sizes
    if part == "test":
        return s["test"]
    return sum(s[k] for k in ("train", "valid", "test") if k != "test" or "test" in spec.shuffled)


def _column_major(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rows holding images flattened column-major (MATLAB order) -> rows flattened row-major."""
    n = images.shape[0]
    return images.reshape(n, width, height).transpose(0, 2, 1).reshape(n, height * width)


def _labels(
    path: Path, what: str, labels: np.ndarray, spec: DatasetSpec, first: int
) -> torch.Tensor:
    assert spec.num_classes is not None
    check_values(path, what, labels, low=first, high=first + spec.num_classes - 1, integer=True)
    return torch.from_numpy(labels.astype(np.int64) - first)


def _read_idx(
    spec: DatasetSpec, folder: Path, root: Path, parts: tuple[str, ...]
) -> dict[str, _Part]:
    assert spec.torchvision_class is not None
    out = {}
    for part in parts:
        prefix, count = ("t10k" if part == "test" else "train"), _source_size(spec, part)
        for kind in ("images", "labels"):
            n_dims = 3 if kind == "images" else 1
            check_idx_file(folder / f"{prefix}-{kind}-idx{n_dims}-ubyte", kind=kind, count=count)
        images, labels = read_torchvision_mnist(spec.torchvision_class, root, train=part == "train")
        path = folder / f"{prefix}-labels-idx1-ubyte"
        out[part] = _Part(
            images.reshape(count, -1).float().div_(255),
            _labels(path, "labels", labels.numpy(), spec, 0),
        )
    return out


def _read_static_mnist(
    spec: DatasetSpec, folder: Path, root: Path, parts: tuple[str, ...]
) -> dict[str, _Part]:
    files = {"train": ("train", "valid"), "test": ("test",)}
    out = {}
    for part in parts:
        arrays = []
        for split in files[part]:
            path = folder / f"binarized_mnist_{split}.amat"
            arrays.append(read_amat(path, n_cols=spec.dim))
            if arrays[-1].shape[0] != spec.split_sizes[split]:
                raise DatasetCorruptError(
                    path, f"{arrays[-1].shape[0]} rows, expected {spec.split_sizes[split]}"
                )
        out[part] = _Part(torch.from_numpy(np.concatenate(arrays)).float(), None)
    return out


def _read_omniglot(
    spec: DatasetSpec, folder: Path, root: Path, parts: tuple[str, ...]
) -> dict[str, _Part]:
    path, d, k = folder / spec.files[0].name, spec.dim, spec.num_classes
    names = {"train": ("data", "target"), "test": ("testdata", "testtarget")}
    shapes = {}
    for part in parts:
        n = _source_size(spec, part)
        shapes |= {names[part][0]: (d, n), names[part][1]: (k, n)}
    raw = read_mat(path, shapes)
    out = {}
    for part in parts:
        x_name, t_name = names[part]
        x, target = raw[x_name].T, raw[t_name]
        check_values(path, x_name, x, low=0, high=1)
        check_values(path, t_name, target, low=0, high=1, integer=True)
        if not (target.sum(axis=0) == 1).all():
            raise DatasetCorruptError(path, f"{t_name} is not one-hot (one 1 per column)")
        _, h, w = spec.image_shape
        images = torch.from_numpy(_column_major(x, h, w).astype(np.float32))
        out[part] = _Part(images, torch.from_numpy(target.argmax(axis=0).astype(np.int64)))
    return out


def _read_caltech(
    spec: DatasetSpec, folder: Path, root: Path, parts: tuple[str, ...]
) -> dict[str, _Part]:
    path, d, s = folder / spec.files[0].name, spec.dim, spec.split_sizes
    names = {"train": "train", "valid": "val", "test": "test"}
    use = [k for k in names if _part_of(spec, k) in parts]
    shapes = {}
    for k in use:
        shapes |= {f"{names[k]}_data": (s[k], d), f"{names[k]}_labels": (s[k], 1)}
    raw = read_mat(path, shapes)
    images, labels = {}, {}
    for k in use:
        x, y = raw[f"{names[k]}_data"], raw[f"{names[k]}_labels"][:, 0]
        check_values(path, f"{names[k]}_data", x, low=0, high=1, integer=True)
        _, h, w = spec.image_shape
        images[k] = torch.from_numpy(
            1.0 - _column_major(x, h, w).astype(np.float32)
        )  # 1 = silhouette
        labels[k] = _labels(path, f"{names[k]}_labels", y, spec, 1)
    out = {}
    if "train" in parts:
        out["train"] = _Part(
            torch.cat([images["train"], images["valid"]]),
            torch.cat([labels["train"], labels["valid"]]),
        )
    if "test" in parts:
        out["test"] = _Part(images["test"], labels["test"])
    return out


def _read_frey(
    spec: DatasetSpec, folder: Path, root: Path, parts: tuple[str, ...]
) -> dict[str, _Part]:
    path = folder / spec.files[0].name
    ff = read_mat(path, {"ff": (spec.dim, _source_size(spec, "train"))})["ff"]
    check_values(path, "ff", ff, low=0, high=255)
    # One frame per column, each frame 28 x 20 flattened row-major: rows of ff.T are images.
    return {"train": _Part(torch.from_numpy(ff.T.astype(np.float32) / 255.0), None)}


_READERS: dict[str, Callable[[DatasetSpec, Path, Path, tuple[str, ...]], dict[str, _Part]]] = {
    "dynamic_mnist": _read_idx,
    "fashion_mnist": _read_idx,
    "static_mnist": _read_static_mnist,
    "omniglot": _read_omniglot,
    "caltech101": _read_caltech,
    "frey_faces": _read_frey,
}

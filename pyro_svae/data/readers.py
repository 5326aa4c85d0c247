"""Readers of the standard file formats, each checking what it reads.

Every reader raises :class:`~pyro_svae.data.errors.DatasetCorruptError` (naming the file and the
problem) on a file of the wrong size, header, shape or values, never returning a wrong dataset.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
import torch
import torchvision.datasets

from .errors import DatasetCorruptError

__all__ = ["check_idx_file", "check_values", "read_amat", "read_mat", "read_torchvision_mnist"]

_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # unsigned bytes, 3 / 1 dimensions


def check_idx_file(
    path: Path,
    *,
    kind: Literal["images", "labels"],
    count: int,
    image_size: tuple[int, int] = (28, 28),
) -> None:
    """Check an uncompressed IDX file's magic number, shape (``count`` items) and byte size."""
    ndim = 3 if kind == "images" else 1
    header_len = 4 + 4 * ndim
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(header_len)
    if header[:2] == b"\x1f\x8b":
        raise DatasetCorruptError(path, "it is gzip-compressed; decompress it or name it '.gz'")
    if len(header) < header_len:
        raise DatasetCorruptError(path, f"{size} bytes, shorter than an IDX header")
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_MAGIC[kind]:
        raise DatasetCorruptError(
            path,
            f"bad IDX magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[kind]:08x} "
            f"(an IDX file of {kind}, unsigned bytes)",
        )
    dims = struct.unpack(f">{ndim}I", header[4:header_len])
    expected = (count, *image_size) if kind == "images" else (count,)
    if dims != expected:
        raise DatasetCorruptError(path, f"the IDX header gives shape {dims}, expected {expected}")
    want = header_len + int(np.prod(dims))
    if size != want:
        raise DatasetCorruptError(path, f"{size} bytes, but shape {dims} needs {want} (truncated?)")


def read_torchvision_mnist(
    class_name: str, root: Path, *, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of ``torchvision.datasets.<class_name>``.

    ``root`` is the data root (torchvision reads ``<root>/<class_name>/raw/*-ubyte``); nothing is
    downloaded. Check the files with :func:`check_idx_file` first for precise error messages.
    """
    cls = getattr(torchvision.datasets, class_name)
    try:
        ds = cls(str(root), train=train, download=False)
    except (AssertionError, RuntimeError, TypeError, ValueError) as err:
        raise DatasetCorruptError(Path(root) / class_name / "raw", f"torchvision: {err}") from err
    return ds.data, ds.targets


def read_amat(path: Path, *, n_cols: int) -> np.ndarray:
    """The 0/1 rows of a ``.amat`` text file (one image per line) as a uint8 array (N, n_cols)."""
    buf = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    line = 2 * n_cols  # the standard layout: "v v ... v\n", one byte per value and separator
    if buf.size and buf.size % line == 0:
        rows = buf.reshape(-1, line)
        values, seps = rows[:, 0::2], rows[:, 1::2]
        if (
            ((values == 48) | (values == 49)).all()
            and (seps[:, :-1] == 32).all()
            and (seps[:, -1] == 10).all()
        ):
            return values - np.uint8(48)
    return _read_amat_general(path, buf, n_cols)


def _read_amat_general(path: Path, buf: np.ndarray, n_cols: int) -> np.ndarray:
    # Any whitespace layout (CRLF, tabs, runs of spaces, trailing blanks), still vectorised.
    allowed = np.zeros(256, dtype=bool)
    allowed[list(b"01 \t\r\n")] = True
    bad = np.flatnonzero(~allowed[buf])
    if bad.size:
        line_no = int(np.count_nonzero(buf[: bad[0]] == 10)) + 1
        char = bytes(buf[bad[0] : bad[0] + 1]).decode("latin-1")
        raise DatasetCorruptError(
            path, f"line {line_no} has the character {char!r}; values must be 0 or 1"
        )
    counts = [len(row.split()) for row in buf.tobytes().splitlines()]
    counts = [c for c in counts if c]
    if not counts:
        raise DatasetCorruptError(path, "no rows")
    wrong = next((i for i, c in enumerate(counts) if c != n_cols), None)
    if wrong is not None:
        raise DatasetCorruptError(
            path, f"row {wrong + 1} has {counts[wrong]} values, expected {n_cols}"
        )
    digits = (buf == 48) | (buf == 49)
    values = buf[digits]
    if values.size != n_cols * len(counts):  # a multi-digit token such as "10"
        raise DatasetCorruptError(path, "values must be single digits 0 or 1")
    return (values - np.uint8(48)).reshape(len(counts), n_cols)


def read_mat(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The named variables of a MATLAB ``.mat`` file, each checked against its expected shape."""
    try:
        raw = scipy.io.loadmat(str(path), variable_names=list(shapes))
    except Exception as err:  # scipy raises many types on a damaged file
        raise DatasetCorruptError(path, f"not a readable MATLAB file ({err})") from err
    missing = [k for k in shapes if k not in raw]
    if missing:
        present = sorted(name for name, _, _ in scipy.io.whosmat(str(path)))
        raise DatasetCorruptError(
            path,
            f"variable(s) {', '.join(missing)} missing (it has: {', '.join(present) or 'none'})",
        )
    for key, shape in shapes.items():
        if raw[key].shape != tuple(shape):
            raise DatasetCorruptError(
                path, f"variable {key!r} has shape {raw[key].shape}, expected {tuple(shape)}"
            )
    return {k: raw[k] for k in shapes}


def check_values(
    path: Path, what: str, array: np.ndarray, *, low: float, high: float, integer: bool = False
) -> None:
    """Check that every value of ``array`` lies in ``[low, high]`` (and is whole if ``integer``)."""
    if not np.issubdtype(array.dtype, np.number) or array.dtype.kind == "c":
        raise DatasetCorruptError(path, f"{what} has dtype {array.dtype}, expected numbers")
    finite = np.isfinite(array).all()
    lo, hi = (array.min(), array.max()) if array.size else (low, high)
    if not finite or lo < low or hi > high:
        raise DatasetCorruptError(
            path, f"{what} has values in [{lo}, {hi}], expected values in [{low}, {high}]"
        )
    if integer and array.dtype.kind == "f" and not (array == np.round(array)).all():
        raise DatasetCorruptError(path, f"{what} has non-integer values, expected integers")

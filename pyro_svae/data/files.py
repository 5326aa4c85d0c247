"""Finding a dataset's files under the data root, downloading missing ones, checking md5s."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import torchvision.datasets
from torchvision.datasets.utils import download_url, extract_archive

from .errors import DatasetNotFoundError
from .registry import DatasetSpec, FileSpec, get_spec
from .root import describe_data_root, resolve_data_root

__all__ = ["DOWNLOAD_TIMEOUT", "dataset_folder", "ensure_files", "verify_files"]

DOWNLOAD_TIMEOUT = 30.0  # seconds without network progress before a download is given up


def dataset_folder(spec: DatasetSpec, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder where ``spec``'s files are expected: ``<data root>/<spec.folder>``."""
    return resolve_data_root(root) / spec.folder


def _missing(spec: DatasetSpec, folder: Path, parts: tuple[str, ...]) -> list[FileSpec]:
    return [f for f in spec.files_for(parts) if not (folder / f.name).is_file()]


def ensure_files(
    spec: DatasetSpec,
    root: str | os.PathLike[str] | None,
    parts: tuple[str, ...],
    *,
    download: bool,
) -> Path:
    """Make sure the files for ``parts`` are in the dataset's folder, downloading them if allowed.

    A missing IDX file with its ``.gz`` beside it is decompressed in place (as torchvision does).
    Raises :class:`DatasetNotFoundError` when files are still missing. Returns the folder.
    """
    folder = dataset_folder(spec, root)
    missing = _missing(spec, folder, parts)
    if not missing:
        return folder
    notes = []
    for f in missing:
        gz = folder / f"{f.name}.gz"
        if spec.torchvision_class and gz.is_file():
            try:
                extract_archive(str(gz), str(folder))
            except (OSError, EOFError) as err:
                notes.append(f"Could not decompress {gz.name}: {err}.")
    missing = _missing(spec, folder, parts)
    if missing and download:
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT):
                _download(spec, resolve_data_root(root), folder, missing)
            reason = ""
        except Exception as err:  # any network or file-system failure ends in the clear error below
            reason = f"Download failed: {type(err).__name__}: {err}"
        missing = _missing(spec, folder, parts)
        if missing and not reason:
            reason = "Download finished without them."
    else:
        reason = "Not downloaded (download=False)."
    if missing:
        raise DatasetNotFoundError(
            spec.name,
            folder,
            [f.name for f in missing],
            reason=" ".join([*notes, reason]),
            sources=[f.url for f in missing],
            root_note=describe_data_root(root),
        )
    return folder


def _download(spec: DatasetSpec, root: Path, folder: Path, missing: list[FileSpec]) -> None:
    if spec.torchvision_class:
        # torchvision fetches and checks all four gzipped files, then decompresses them.
        cls = getattr(torchvision.datasets, spec.torchvision_class)
        cls(str(root), train=True, download=True)
        return
    for f in missing:
        try:
            download_url(f.url, str(folder), filename=f.name, md5=f.url_md5)
        except BaseException:
            with contextlib.suppress(OSError):  # no partial or mismatching file left behind
                (folder / f.name).unlink()
            raise


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's urlopen calls take no timeout: bound them so an offline machine fails fast.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(name: str, root: str | os.PathLike[str] | None = None) -> dict[str, bool | None]:
    """Compare each of dataset ``name``'s files with the registry's md5.

    Maps each file name to ``True`` (matches), ``False`` (differs) or ``None`` (file absent, or no
    md5 known). A mismatch need not mean damage (see :class:`~pyro_svae.data.registry.FileSpec`).
    """
    spec = get_spec(name)
    folder = dataset_folder(spec, root)
    out: dict[str, bool | None] = {}
    for f in spec.files:
        path = folder / f.name
        out[f.name] = None if f.md5 is None or not path.is_file() else _md5(path) == f.md5
    return out

"""Exceptions raised when a dataset's files are missing or unreadable."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DatasetCorruptError", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing from the data root and could not be downloaded.

    The message names the dataset, each missing file, the folder where it is expected, why no
    download happened (or how it failed) and how to point the data root elsewhere.
    """

    def __init__(
        self,
        dataset: str,
        folder: Path,
        missing: Sequence[str],
        *,
        reason: str,
        sources: Sequence[str] = (),
        root_note: str = "",
    ) -> None:
        self.dataset = dataset
        self.folder = Path(folder)
        self.missing = tuple(missing)
        self._kwargs = {"reason": reason, "sources": tuple(sources), "root_note": root_note}
        lines = [
            f"dataset {dataset!r}: {len(self.missing)} file(s) not found in {self.folder}:",
            *(f"  - {name}" for name in self.missing),
            reason,
        ]
        if sources:
            lines.append("Sources: " + ", ".join(sources))
        lines.append(
            "Put the files in that folder, or point the data root at a folder that has them: "
            "set the PYRO_SVAE_DATA environment variable, or pass --data-dir DIR (root=DIR in "
            "Python)."
        )
        if root_note:
            lines.append(root_note)
        super().__init__("\n".join(lines))

    def __reduce__(self):  # picklable across processes despite the keyword-only arguments
        return functools.partial(type(self), **self._kwargs), (
            self.dataset,
            self.folder,
            self.missing,
        )


class DatasetCorruptError(ValueError):
    """A dataset file exists but is not the expected file (wrong size, header, shape or values)."""

    def __init__(self, path: Path | str, problem: str, dataset: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.dataset = dataset
        prefix = f"dataset {dataset!r}: " if dataset else ""
        super().__init__(
            f"{prefix}corrupt or unexpected file {self.path}: {problem}. "
            "Delete it and download it again, or replace it with the original file."
        )

    def __reduce__(self):  # picklable across processes
        return type(self), (self.path, self.problem, self.dataset)

    def with_dataset(self, dataset: str) -> DatasetCorruptError:
        """The same error, with the dataset's name in the message."""
        return DatasetCorruptError(self.path, self.problem, dataset=dataset)

"""The files a run writes besides its checkpoints: per-epoch metrics and the final summary."""

from __future__ import annotations

import csv
import io
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

import pyro_svae

from .checkpoint import atomic_write, write_json

__all__ = ["RunPaths", "environment", "write_metrics", "write_summary"]


@dataclass(frozen=True)
class RunPaths:
    """The files of a run folder."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        """Latest state, rewritten after every epoch (what ``--resume`` reads)."""
        return self.root / "checkpoint.pt"

    @property
    def best(self) -> Path:
        """Parameters with the best validation ELBO so far."""
        return self.root / "best.pt"

    @property
    def metrics_jsonl(self) -> Path:
        """One JSON object per epoch."""
        return self.root / "metrics.jsonl"

    @property
    def metrics_csv(self) -> Path:
        """The same rows as CSV."""
        return self.root / "metrics.csv"

    @property
    def summary(self) -> Path:
        """Final JSON summary."""
        return self.root / "summary.json"

    @property
    def config(self) -> Path:
        """The configuration of the (latest) invocation."""
        return self.root / "config.json"

    def as_dict(self) -> dict[str, str]:
        """``{name: path}`` of every file, for the summary."""
        names = ("checkpoint", "best", "metrics_jsonl", "metrics_csv", "summary", "config")
        return {name: os.fspath(getattr(self, name)) for name in names}


def write_metrics(paths: RunPaths, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` and ``metrics.csv`` from the whole history (atomically, so a
    resumed run never holds duplicate or missing rows)."""
    write_json(paths.metrics_jsonl, list(history), lines=True)
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    text = buffer.getvalue()
    atomic_write(paths.metrics_csv, lambda f: f.write(text.encode()))


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware, for reproducibility."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyro_svae": pyro_svae.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def write_summary(paths: RunPaths, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically (NaN becomes ``null``)."""
    return write_json(paths.summary, summary)

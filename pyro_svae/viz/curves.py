"""Training curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ._common import save_figure

__all__ = ["save_training_curves"]


def save_training_curves(
    metrics_path: str | Path, path: str | Path, *, keys: Sequence[str] | None = None
) -> Path:
    """Plot per-epoch metrics from a JSONL file (one JSON object per epoch with an ``"epoch"`` key)."""
    records = [
        json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()
    ]
    if not records:
        raise ValueError(f"no metrics in {metrics_path}")
    keys = keys or [k for k, v in records[0].items() if k != "epoch" and isinstance(v, int | float)]
    fig = Figure(figsize=(6, 2.2 * len(keys)))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)
    epochs = [r["epoch"] for r in records]
    for ax, key in zip(axes[:, 0], keys, strict=True):
        ax.plot(epochs, [r.get(key, float("nan")) for r in records], marker=".")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    return save_figure(fig, path)

"""Training curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ._common import save_figure

__all__ = ["save_training_curves"]


def save_training_curves(
    metrics_path: str | Path,
    path: str | Path,
    *,
    keys: Sequence[str | Sequence[str]] | None = None,
) -> Path:
    """Plot per-epoch metrics from a JSONL file (one JSON object per epoch with an ``"epoch"`` key),
    one panel per entry of ``keys`` (default: every numeric metric of the first epoch). An entry
    that is a sequence of names draws them together in one panel, with a legend."""
    records = [
        json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()
    ]
    if not records:
        raise ValueError(f"no metrics in {metrics_path}")
    keys = keys or [k for k, v in records[0].items() if k != "epoch" and isinstance(v, int | float)]
    panels = [(key,) if isinstance(key, str) else tuple(key) for key in keys]
    fig = Figure(figsize=(6, 2.2 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)
    epochs = [r["epoch"] for r in records]
    for ax, names in zip(axes[:, 0], panels, strict=True):
        for name in names:
            ax.plot(epochs, [r.get(name, float("nan")) for r in records], marker=".", label=name)
        if len(names) > 1:
            ax.legend(fontsize="small")
        ax.set_ylabel(names[0] if len(names) == 1 else "")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    return save_figure(fig, path)

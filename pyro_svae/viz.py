"""Plots: image grids (samples, reconstructions) and training curves, written to files with matplotlib."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import (
    Figure,
)  # object-oriented API: no pyplot state, no display, no backend switch
from torch import Tensor

__all__ = ["image_grid", "save_image_grid", "save_reconstructions", "save_training_curves"]


def image_grid(
    images: Tensor, image_shape: Sequence[int], ncol: int | None = None, pad: int = 1
) -> Tensor:
    """Tile flat images ``(n, C*H*W)`` into one ``(H', W')`` (grey) or ``(H', W', C)`` array in [0, 1]."""
    c, h, w = (int(s) for s in image_shape)
    n = images.shape[0]
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    tiles = images.detach().float().cpu().clamp(0, 1).reshape(n, c, h, w)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = tiles[i]
    return grid[0] if c == 1 else grid.permute(1, 2, 0)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def save_image_grid(
    images: Tensor,
    image_shape: Sequence[int],
    path: str | Path,
    *,
    title: str | None = None,
    ncol: int | None = None,
) -> Path:
    """Save a grid of flat images (e.g. ``vae.generate(64)``) to ``path`` (PNG, PDF, ...)."""
    grid = image_grid(images, image_shape, ncol)
    fig = Figure(figsize=(6, 6 * grid.shape[0] / grid.shape[1]))
    ax = fig.subplots()
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def save_reconstructions(
    originals: Tensor,
    reconstructions: Tensor,
    image_shape: Sequence[int],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Save originals (odd rows) above their reconstructions (even rows)."""
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"shapes differ: {tuple(originals.shape)} vs {tuple(reconstructions.shape)}"
        )
    ncol = min(10, originals.shape[0])
    rows = []
    for start in range(0, originals.shape[0], ncol):
        rows += [originals[start : start + ncol], reconstructions[start : start + ncol]]
    return save_image_grid(torch.cat(rows), image_shape, path, title=title, ncol=ncol)


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
    return _save(fig, path)

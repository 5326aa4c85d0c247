"""Image grids: samples and reconstructions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ._common import save_figure

__all__ = ["image_grid", "save_image_grid", "save_reconstructions"]


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
    return save_figure(fig, path)


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

"""Helpers shared by the plot modules: saving a figure, checking inputs, colouring by label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure  # object-oriented API: no pyplot state, no backend switch
from matplotlib.lines import Line2D
from torch import Tensor

#: at most this many distinct integer labels get a discrete legend; more get a colorbar
MAX_LEGEND_CLASSES = 20


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def as_points(z: Any, dim: int, name: str = "z") -> Tensor:
    """``z`` as a float64 CPU tensor ``(N, dim)``; a ``ValueError`` names the expected shape."""
    t = torch.as_tensor(z).detach().cpu()
    if t.dim() == 1 and t.shape[0] == dim:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (N, {dim}) (points in R^{dim}), got {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} holds no points")
    return t.double()


def as_labels(labels: Any, n: int) -> np.ndarray | None:
    """``labels`` as a 1-D NumPy array of length ``n`` (or ``None``)."""
    if labels is None:
        return None
    arr = np.asarray(torch.as_tensor(labels).detach().cpu())
    if arr.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), one per point, got {arr.shape}")
    return arr


def label_palette(labels: np.ndarray | None) -> tuple[np.ndarray, list] | None:
    """``(classes, colours)`` for discrete labels (at most 20 distinct integers, or strings);
    ``None`` for no labels or continuous ones."""
    if labels is None:
        return None
    classes = np.unique(labels)
    if (
        labels.dtype.kind in "biu" and len(classes) <= MAX_LEGEND_CLASSES
    ) or labels.dtype.kind in "OUS":
        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        return classes, [cmap(i % cmap.N) for i in range(len(classes))]
    return None


def scatter_by_label(
    ax: Any,
    coords: Sequence[np.ndarray],
    labels: np.ndarray | None,
    *,
    fig: Figure,
    legend: bool = True,
    **kwargs: Any,
) -> None:
    """Scatter ``coords`` (a tuple of 2 or 3 coordinate arrays) on ``ax``, coloured by ``labels``.

    Discrete labels (see :func:`label_palette`) get one colour each and a legend right of ``ax``;
    other labels a continuous colormap and a colorbar; ``None`` one colour.
    """
    kwargs = {"s": 6, "alpha": 0.8, "linewidths": 0, **kwargs}
    if labels is None:
        ax.scatter(*coords, color="C0", **kwargs)
        return
    palette = label_palette(labels)
    if palette is not None:
        for label, colour in zip(*palette, strict=True):
            keep = labels == label
            ax.scatter(*(c[keep] for c in coords), color=colour, **kwargs)
        if legend:  # plain marker proxies: cheaper to draw than copies of (3-D) scatter handles
            handles = [
                Line2D(
                    [], [], marker="o", markersize=5, linestyle="", color=colour, label=str(label)
                )
                for label, colour in zip(*palette, strict=True)
            ]
            ax.legend(
                handles=handles,
                title="label",
                loc="center left",
                bbox_to_anchor=(1.02, 0.5),
                fontsize="small",
                frameon=False,
            )
        return
    mappable = ax.scatter(*coords, c=labels.astype(float), cmap="viridis", **kwargs)
    if legend:
        fig.colorbar(mappable, ax=ax, shrink=0.7, label="label")

r"""Latents on :math:`S^2` and :math:`S^1`: Hammer projection, 3-D scatter, rotating GIF, circles.

Points on :math:`S^2` are ``(x, y, z)`` unit vectors with ``z`` the polar axis: longitude
:math:`\lambda = \operatorname{atan2}(y, x) \in (-\pi, \pi]`, latitude :math:`\varphi = \arcsin z`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ._common import as_labels, as_points, label_palette, save_figure, scatter_by_label

__all__ = [
    "hammer_projection",
    "save_circle_plots",
    "save_hammer_plot",
    "save_sphere_rotation_gif",
    "save_sphere_scatter",
]

_SQRT2 = math.sqrt(2.0)


def _hammer_lonlat(lon: Tensor, lat: Tensor) -> Tensor:
    """Hammer–Aitoff coordinates ``(..., 2)`` of longitudes in [-π, π] and latitudes in [-π/2, π/2]."""
    half = lon / 2
    denom = torch.sqrt(1 + torch.cos(lat) * torch.cos(half))
    x = 2 * _SQRT2 * torch.cos(lat) * torch.sin(half) / denom
    y = _SQRT2 * torch.sin(lat) / denom
    return torch.stack([x, y], dim=-1)


def hammer_projection(points: Tensor) -> Tensor:
    r"""Equal-area Hammer–Aitoff projection of points on :math:`S^2`, ``(..., 3) -> (..., 2)``.

    .. math:: x = \frac{2\sqrt2 \cos\varphi \sin(\lambda/2)}{\sqrt{1 + \cos\varphi\cos(\lambda/2)}},
              \qquad y = \frac{\sqrt2 \sin\varphi}{\sqrt{1 + \cos\varphi\cos(\lambda/2)}}

    with longitude :math:`\lambda = \operatorname{atan2}(y, x)` and latitude
    :math:`\varphi = \arcsin z`. The image is the ellipse :math:`x^2/8 + y^2/2 \le 1`: ``(1, 0, 0)``
    maps to the centre ``(0, 0)``, the poles ``(0, 0, ±1)`` to ``(0, ±√2)``, ``(0, ±1, 0)`` to
    ``(±2/√(1 + 1/√2), 0)``. Points are first divided by their norm.
    """
    p = torch.as_tensor(points)
    if p.dim() == 0 or p.shape[-1] != 3:
        raise ValueError(
            f"hammer_projection needs points on S^2, shape (..., 3); got shape {tuple(p.shape)}"
        )
    if not p.is_floating_point():
        p = p.to(torch.get_default_dtype())
    norm = p.norm(dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ValueError("hammer_projection got a zero vector, which is not a point on S^2")
    p = p / norm
    lon = torch.atan2(p[..., 1], p[..., 0])
    lat = torch.asin(p[..., 2].clamp(-1, 1))
    return _hammer_lonlat(lon, lat)


def _hammer_frame(ax: Any) -> None:
    """The outline ellipse and a 30° graticule."""
    lat = torch.linspace(-math.pi / 2, math.pi / 2, 91, dtype=torch.float64)
    lon = torch.linspace(-math.pi, math.pi, 181, dtype=torch.float64)
    style = {"color": "0.8", "linewidth": 0.6, "zorder": 0}
    for degrees in range(-150, 180, 30):
        xy = _hammer_lonlat(torch.full_like(lat, math.radians(degrees)), lat)
        ax.plot(xy[:, 0], xy[:, 1], **style)
    for degrees in range(-60, 90, 30):
        xy = _hammer_lonlat(lon, torch.full_like(lon, math.radians(degrees)))
        ax.plot(xy[:, 0], xy[:, 1], **style)
    theta = np.linspace(0, 2 * np.pi, 361)
    ax.plot(2 * _SQRT2 * np.cos(theta), _SQRT2 * np.sin(theta), color="0.3", linewidth=0.9)
    ax.set_aspect("equal")
    ax.set_xlim(-2 * _SQRT2 * 1.02, 2 * _SQRT2 * 1.02)
    ax.set_ylim(-_SQRT2 * 1.04, _SQRT2 * 1.04)
    ax.axis("off")


def save_hammer_plot(
    z: Tensor, labels: Tensor | None, path: str | Path, *, title: str | None = None
) -> Path:
    """Hammer projection (:func:`hammer_projection`) of ``S^2`` latents ``z (N, 3)`` coloured by
    ``labels (N,)`` (a legend for up to 20 classes, else a colorbar; ``None``: one colour)."""
    points = as_points(z, 3)
    labels = as_labels(labels, points.shape[0])
    xy = hammer_projection(points).numpy()
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    _hammer_frame(ax)
    scatter_by_label(ax, (xy[:, 0], xy[:, 1]), labels, fig=fig)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _sphere_axes(fig: Figure, rect: Sequence[float] | None = None, zoom: float = 1.0) -> Any:
    """3-D axes holding a wireframe unit sphere."""
    ax = fig.add_subplot(projection="3d") if rect is None else fig.add_axes(rect, projection="3d")
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    ax.plot_wireframe(
        np.cos(u) * np.sin(v),
        np.sin(u) * np.sin(v),
        np.cos(v),
        color="0.75",
        linewidth=0.4,
        alpha=0.6,
    )
    ticks = (-1, 0, 1)
    ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xticks=ticks, yticks=ticks, zticks=ticks)
    ax.set(xlabel="x", ylabel="y", zlabel="z")
    ax.set_box_aspect((1, 1, 1), zoom=zoom)
    return ax


def _unit_numpy(z: Tensor) -> np.ndarray:
    norm = z.norm(dim=-1, keepdim=True)
    if (norm == 0).any():
        raise ValueError("z holds a zero vector, which is not a point on S^2")
    return (z / norm).numpy()


def save_sphere_scatter(
    z: Tensor,
    labels: Tensor | None,
    path: str | Path,
    *,
    title: str | None = None,
    elev: float = 20.0,
    azim: float = -60.0,
) -> Path:
    """3-D scatter of ``S^2`` latents ``z (N, 3)`` on a wireframe sphere, coloured by ``labels``."""
    points = as_points(z, 3)
    labels = as_labels(labels, points.shape[0])
    p = _unit_numpy(points)
    fig = Figure(figsize=(6, 5))
    ax = _sphere_axes(fig)
    scatter_by_label(ax, (p[:, 0], p[:, 1], p[:, 2]), labels, fig=fig)
    ax.view_init(elev=elev, azim=azim)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def save_sphere_rotation_gif(
    z: Tensor,
    labels: Tensor | None,
    path: str | Path,
    *,
    frames: int = 36,
    fps: int = 12,
    elev: float = 20.0,
    dpi: int = 80,
    title: str | None = None,
) -> Path:
    """Animated GIF of the 3-D scatter of ``S^2`` latents turning once about the polar axis.

    Written with :class:`matplotlib.animation.FuncAnimation` and the Pillow writer; ``frames``
    (``>= 2``) views at azimuths ``360° * i / frames``, shown at ``fps`` frames per second.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps!r}")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(
            f"save_sphere_rotation_gif writes a GIF: the path must end in .gif, got {path}"
        )
    points = as_points(z, 3)
    labels = as_labels(labels, points.shape[0])
    p = _unit_numpy(points)
    fig = Figure(figsize=(5.4, 4.2))
    ax = _sphere_axes(fig, rect=(0.0, 0.0, 0.76, 0.94), zoom=1.3)
    ax.set_axis_off()  # ticks and panes would cost more to draw than the points
    scatter_by_label(ax, (p[:, 0], p[:, 1], p[:, 2]), labels, fig=fig, depthshade=False)
    if title:
        fig.suptitle(title)

    def turn(i: int) -> tuple:
        ax.view_init(elev=elev, azim=360.0 * i / frames)
        return ()

    path.parent.mkdir(parents=True, exist_ok=True)
    animation = FuncAnimation(fig, turn, frames=frames, blit=False, repeat=False)
    animation.save(path, writer=PillowWriter(fps=fps), dpi=dpi)
    return path


def _circle_factors(z: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """``(N, 2)``, ``(N, K, 2)`` or a sequence of ``(N, 2)`` as a list of ``(N, 2)`` float64."""
    if isinstance(z, Sequence) and not isinstance(z, Tensor):
        factors = [as_points(f, 2, name=f"z[{i}]") for i, f in enumerate(z)]
    else:
        t = torch.as_tensor(z)
        if t.dim() == 3 and t.shape[-1] == 2:
            factors = [as_points(f, 2) for f in t.unbind(1)]
        else:
            factors = [as_points(t, 2)]
    if not factors:
        raise ValueError("save_circle_plots needs at least one S^1 factor")
    if len({f.shape[0] for f in factors}) > 1:
        raise ValueError(
            f"the factors hold different numbers of points: {[f.shape[0] for f in factors]}"
        )
    return factors


def save_circle_plots(
    z: Tensor | Sequence[Tensor],
    labels: Tensor | None,
    path: str | Path,
    *,
    histograms: bool = True,
    bins: int = 36,
    names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per ``S^1`` factor: the points on the unit circle, coloured by ``labels``, and
    below it (if ``histograms``) a stacked histogram of their angles per label.

    :param z: ``(N, 2)`` for one factor, ``(N, K, 2)`` or a sequence of ``K`` ``(N, 2)`` tensors.
    :param labels: ``(N,)`` or ``None``.
    :param names: panel titles (default ``"S^1 factor k"``).
    """
    factors = _circle_factors(z)
    labels = as_labels(labels, factors[0].shape[0])
    if names is not None and len(names) != len(factors):
        raise ValueError(f"names has {len(names)} entries for {len(factors)} factors")
    k = len(factors)
    rows = 2 if histograms else 1
    fig = Figure(figsize=(3.2 * k + 1.2, 3.4 + 1.6 * (rows - 1)))
    axes = fig.subplots(rows, k, squeeze=False, gridspec_kw={"height_ratios": [3, 1.4][:rows]})
    palette = label_palette(labels)
    circle = np.linspace(0, 2 * np.pi, 361)
    for i, factor in enumerate(factors):
        angle = torch.atan2(factor[:, 1], factor[:, 0]).numpy()
        ax = axes[0, i]
        ax.plot(np.cos(circle), np.sin(circle), color="0.6", linewidth=0.8, zorder=0)
        xy = (np.cos(angle), np.sin(angle))
        scatter_by_label(ax, xy, labels, fig=fig, legend=i == k - 1, s=10, alpha=0.5)
        ax.set_aspect("equal")
        ax.set(xlim=(-1.15, 1.15), ylim=(-1.15, 1.15))
        ax.axis("off")
        ax.set_title(names[i] if names is not None else f"S^1 factor {i}")
        if histograms:
            hist = axes[1, i]
            edges = np.linspace(-np.pi, np.pi, bins + 1)
            if palette is None:
                hist.hist(angle, bins=edges, color="C0")
            else:
                groups = [angle[labels == c] for c in palette[0]]
                hist.hist(groups, bins=edges, stacked=True, color=palette[1])
            hist.set_xlim(-np.pi, np.pi)
            hist.set_xticks(
                [-np.pi, -np.pi / 2, 0, np.pi / 2, np.pi], ["-π", "-π/2", "0", "π/2", "π"]
            )
            hist.set_xlabel("angle")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)

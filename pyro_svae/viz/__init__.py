"""Plots written to files with matplotlib's object-oriented API (no pyplot state, no display).

* :mod:`~pyro_svae.viz.images`: image grids of samples and reconstructions;
* :mod:`~pyro_svae.viz.curves`: training curves from ``metrics.jsonl``;
* :mod:`~pyro_svae.viz.interpolation`: :func:`slerp` on spheres, factor-wise interpolation on
  products of spheres, decoded interpolation strips;
* :mod:`~pyro_svae.viz.sphere`: Hammer projection and 3-D scatter (PNG, rotating GIF) of ``S^2``
  latents, circle plots of ``S^1`` factors;
* :mod:`~pyro_svae.viz.report`: :func:`save_all_plots`, everything that applies to a trained VAE
  (``pyro-svae train --plots``).
"""

from __future__ import annotations

from .curves import save_training_curves
from .images import image_grid, save_image_grid, save_reconstructions
from .interpolation import (
    decode_mean,
    interpolate_latents,
    lerp,
    posterior_points,
    save_interpolations,
    slerp,
)
from .report import save_all_plots
from .sphere import (
    hammer_projection,
    save_circle_plots,
    save_hammer_plot,
    save_sphere_rotation_gif,
    save_sphere_scatter,
)

__all__ = [
    "decode_mean",
    "hammer_projection",
    "image_grid",
    "interpolate_latents",
    "lerp",
    "posterior_points",
    "save_all_plots",
    "save_circle_plots",
    "save_hammer_plot",
    "save_image_grid",
    "save_interpolations",
    "save_reconstructions",
    "save_sphere_rotation_gif",
    "save_sphere_scatter",
    "save_training_curves",
    "slerp",
]

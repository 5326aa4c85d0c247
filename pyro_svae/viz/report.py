"""Every plot that applies to a trained VAE's latent space, written into a run folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pyro_svae.train.evaluation import eval_indices

from .curves import save_training_curves
from .images import save_image_grid, save_reconstructions
from .interpolation import posterior_points, save_interpolations
from .sphere import (
    save_circle_plots,
    save_hammer_plot,
    save_sphere_rotation_gif,
    save_sphere_scatter,
)

if TYPE_CHECKING:
    from pyro_svae.data import ImageData
    from pyro_svae.models.vae import VAE

__all__ = ["save_all_plots"]


def _observed(data: ImageData, idx: torch.Tensor, seed: int) -> torch.Tensor:
    """The points ``idx`` as the model observes them (a seeded draw for dynamic binarisation)."""
    return data.draw(idx, torch.Generator().manual_seed(seed))


def _shown(n_data: int, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct indices drawn at random with ``seed``, in the drawn order (not sorted: test files
    are often sorted by class, so neither a prefix nor sorted neighbours would mix the classes)."""
    return torch.randperm(n_data, generator=torch.Generator().manual_seed(seed))[:n]


def save_all_plots(
    vae: VAE,
    data: ImageData,
    run_dir: str | Path,
    *,
    metrics_path: str | Path | None = None,
    curve_keys: Sequence[str] | None = None,
    num_images: int = 64,
    num_reconstructions: int = 20,
    num_pairs: int = 6,
    steps: int = 10,
    num_points: int = 1000,
    gif_frames: int = 36,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the plots that apply to ``vae``'s latent spec into ``run_dir``; returns name → path.

    Always: ``samples.png`` (prior samples), ``reconstructions.png``, ``interpolations.png``
    (geodesic interpolations between ``num_pairs`` pairs of data points) and, given a non-empty
    ``metrics_path`` (a run's ``metrics.jsonl``), ``curves.png``. For the posterior modes of
    ``num_points`` points of ``data`` (the fixed random subset of
    :func:`~pyro_svae.train.evaluation.eval_indices`, the one capped evaluations use), coloured
    by its labels: per ``S^2`` factor a Hammer
    projection ``hammer.png``, a 3-D scatter ``sphere.png`` and a rotating ``sphere_rotation.gif``
    (with a ``_<factor index>`` suffix when the spec has several factors); for the ``S^1`` factors
    one ``circles.png``. The reconstructed points and the interpolation pairs are drawn at random
    with ``seed``, so every class can appear even when ``data`` is sorted by class. Reconstructions
    and interpolations show the stored images (grey values
    for dynamically binarised data); the latent plots encode the points as the model observes them
    (a draw seeded with ``seed``). The random state is seeded with ``seed`` inside and restored after.

    :param vae: a trained :class:`~pyro_svae.models.VAE` (or ``FlowVAE``), on any device.
    :param data: an :class:`~pyro_svae.data.ImageData` split (``images``, ``labels``, ``image_shape``).
    """
    root = Path(run_dir)
    shape = tuple(vae.image_shape or data.image_shape)
    n_data = len(data.images)
    if n_data == 0:
        raise ValueError("save_all_plots needs a non-empty data set")
    device = next(vae.parameters()).device
    plots: dict[str, Path] = {}
    was_training = vae.training
    vae.eval()
    cuda = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed)
            plots["samples"] = save_image_grid(
                vae.generate(num_images).cpu(), shape, root / "samples.png", title="prior samples"
            )
            x = data.images[_shown(n_data, min(num_reconstructions, n_data), seed)]
            plots["reconstructions"] = save_reconstructions(
                x.cpu(), vae.reconstruct(x.to(device)).cpu(), shape, root / "reconstructions.png"
            )
            pairs = min(num_pairs, n_data // 2)
            if pairs > 0:
                x = data.images[_shown(n_data, 2 * pairs, seed + 1)].cpu()
                plots["interpolations"] = save_interpolations(
                    vae, x[0::2], x[1::2], root / "interpolations.png", steps, image_shape=shape
                )
            plots.update(_latent_plots(vae, data, root, num_points, gif_frames, seed))
    finally:
        vae.train(was_training)
    metrics = None if metrics_path is None else Path(metrics_path)
    if metrics is not None and metrics.is_file() and metrics.read_text().strip():
        plots["curves"] = save_training_curves(metrics, root / "curves.png", keys=curve_keys)
    return plots


def _latent_plots(
    vae: VAE, data: ImageData, root: Path, num_points: int, gif_frames: int, seed: int
) -> dict[str, Path]:
    factors = vae.spec.factors
    wanted = [i for i, f in enumerate(factors) if f.is_sphere and f.manifold_dim in (1, 2)]
    if not wanted:
        return {}
    idx = eval_indices(data, min(num_points, len(data.images)))
    points = posterior_points(vae, _observed(data, idx, seed))
    labels = None if data.labels is None else data.labels[idx].cpu()
    plots: dict[str, Path] = {}
    circles = []
    for i in wanted:
        if factors[i].manifold_dim == 1:
            circles.append(i)
            continue
        suffix = f"_{i}" if len(factors) > 1 else ""
        what = f"posterior modes on S^2 (factor {i} of {vae.spec})"
        plots[f"hammer{suffix}"] = save_hammer_plot(
            points[i], labels, root / f"hammer{suffix}.png", title=what
        )
        plots[f"sphere{suffix}"] = save_sphere_scatter(
            points[i], labels, root / f"sphere{suffix}.png", title=what
        )
        plots[f"sphere_rotation{suffix}"] = save_sphere_rotation_gif(
            points[i], labels, root / f"sphere_rotation{suffix}.gif", frames=gif_frames
        )
    if circles:
        plots["circles"] = save_circle_plots(
            [points[i] for i in circles],
            labels,
            root / "circles.png",
            names=[f"factor {i}: S^1" for i in circles],
            title=f"posterior modes on the S^1 factors of {vae.spec}",
        )
    return plots

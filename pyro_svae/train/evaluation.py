"""Evaluation during and after training: validation ELBO, test metrics and k-NN accuracy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from pyro_svae.data import ImageData
from pyro_svae.infer import evaluate, knn_accuracy
from pyro_svae.models.vae import VAE

__all__ = ["eval_batches", "knn_scores", "posterior_features", "score"]


def eval_batches(
    data: ImageData, batch_size: int, *, limit: int | None = None, seed: int = 0
) -> Iterator[Tensor]:
    """The first ``limit`` points of ``data`` (all if ``None``) in order, as ``x`` batches.

    Dynamically binarised data are drawn from a generator seeded with ``seed``, so every
    evaluation sees the same binary images; the global random state is not touched by the draw.
    """
    n = len(data) if limit is None else min(limit, len(data))
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        yield data.draw(idx, generator)


def score(
    vae: VAE,
    data: ImageData,
    *,
    batch_size: int,
    limit: int | None = None,
    ll_samples: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Per data point: ``ll`` (NaN when ``ll_samples=0``), ``elbo``, ``reconstruction`` and ``kl``
    (β = 1, no warm-up or capacity), on the first ``limit`` points of ``data``."""
    return evaluate(
        vae.model,
        vae.guide,
        eval_batches(data, batch_size, limit=limit, seed=seed),
        num_samples=ll_samples,
        max_plate_nesting=vae.max_plate_nesting,
        progress=progress,
    )


@torch.no_grad()
def posterior_features(
    vae: VAE, data: ImageData, *, batch_size: int, limit: int | None = None, seed: int = 0
) -> list[Tensor]:
    """Posterior mean features (one ``(n, m)`` tensor per latent factor) of the first ``limit``
    points of ``data``."""
    parts = [
        vae.posterior_mean_features(x)
        for x in eval_batches(data, batch_size, limit=limit, seed=seed)
    ]
    return [torch.cat(factor) for factor in zip(*parts, strict=True)]


def knn_scores(
    vae: VAE,
    train: ImageData,
    test: ImageData,
    sizes: Sequence[int],
    *,
    batch_size: int,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """5-NN accuracy (geodesic distance) on test posterior features with ``n`` labelled training
    points, for each ``n`` in ``sizes``: ``{"<n>": accuracy}``; empty without labels.

    At most ``limit`` points of each split are encoded; a size above the training points
    available is lowered to that number (and keyed by it).
    """
    if not sizes or train.labels is None or test.labels is None:
        return {}
    train_features = posterior_features(vae, train, batch_size=batch_size, limit=limit, seed=seed)
    test_features = posterior_features(vae, test, batch_size=batch_size, limit=limit, seed=seed + 1)
    n_train, n_test = train_features[0].shape[0], test_features[0].shape[0]
    train_labels = train.labels[:n_train]
    test_labels = test.labels[:n_test]
    result = {}
    for n in sorted({min(int(s), n_train) for s in sizes}):
        result[str(n)] = knn_accuracy(
            train_features, train_labels, test_features, test_labels, num_labelled=n, seed=seed
        )
    return result

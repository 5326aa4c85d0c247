"""Evaluation during and after training: validation ELBO, test metrics and k-NN accuracy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from pyro_svae.data import ImageData
from pyro_svae.infer import evaluate, knn_accuracy
from pyro_svae.models.vae import VAE

__all__ = [
    "FACTOR_KL_KEY",
    "UNUSED_FACTOR_KL",
    "eval_batches",
    "eval_indices",
    "factor_kl",
    "feature_metrics",
    "knn_scores",
    "posterior_features",
    "score",
    "sphere_factor_count",
    "sphere_factor_kls",
    "unused_sphere_factors",
]


#: seed of the fixed random subset used when an evaluation is capped (``limit``)
SUBSET_SEED = 12345


def eval_indices(data: ImageData, limit: int | None = None) -> Tensor:
    """The points an evaluation uses: all of ``data``, or with ``limit`` a fixed random subset of that
    size (sorted). Not the first ``limit`` points: test files are often sorted by class (static MNIST
    is), so a prefix would be biased."""
    if limit is None or limit >= len(data):
        return torch.arange(len(data))
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(SUBSET_SEED))
    return perm[:limit].sort().values


def eval_batches(
    data: ImageData, batch_size: int, *, limit: int | None = None, seed: int = 0
) -> Iterator[Tensor]:
    """The points of :func:`eval_indices` (all, or a fixed random subset of ``limit``) as ``x``
    batches.

    Dynamically binarised data are drawn from a generator seeded with ``seed``, so every
    evaluation sees the same binary images; the global random state is not touched by the draw.
    """
    indices = eval_indices(data, limit)
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(indices), batch_size):
        yield data.draw(indices[start : start + batch_size], generator)


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
    (β = 1, no warm-up or capacity), on the points of :func:`eval_indices`."""
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
    """Posterior mean features (one ``(n, m)`` tensor per latent factor) of the points of
    :func:`eval_indices`."""
    parts = [
        vae.posterior_mean_features(x)
        for x in eval_batches(data, batch_size, limit=limit, seed=seed)
    ]
    return [torch.cat(factor) for factor in zip(*parts, strict=True)]


#: a sphere factor whose mean KL to the prior is below this many nats per data point carries almost
#: no information about the data (its posterior has collapsed onto the prior)
UNUSED_FACTOR_KL = 0.5


@torch.no_grad()
def factor_kl(
    vae: VAE, data: ImageData, *, batch_size: int, limit: int | None = None, seed: int = 0
) -> list[dict]:
    """Mean KL(q(z|x) ‖ p(z)) of every latent factor (:meth:`VAE.kl_per_factor`), in nats per data
    point, on the points of :func:`eval_indices`: one entry per latent group,
    ``{"group", "family", "kl"}``, where ``kl`` lists one value per sphere factor (``S^4 × S^4``
    gives two) or per dimension of a diagonal Gaussian (one value for a full-covariance group), or
    is ``None`` for a flow posterior without a closed-form KL (every flow but Householder-only
    ones). The values of a group add up to its part of the ELBO's KL."""
    totals: list[Tensor | None] = [None] * len(vae.groups)
    count = 0
    for x in eval_batches(data, batch_size, limit=limit, seed=seed):
        count += x.shape[0]
        for index, kl in enumerate(vae.kl_per_factor(x)):
            if kl is not None:
                totals[index] = kl.sum(0) if totals[index] is None else totals[index] + kl.sum(0)
    return [
        {
            "group": " × ".join([group.manifold] * group.count),
            "family": group.family,
            "kl": None if total is None else (total / count).tolist(),
        }
        for group, total in zip(vae.groups, totals, strict=True)
    ]


#: metrics key of the validation KL of sphere factor ``i`` (from 1): ``f"{FACTOR_KL_KEY}{i}"``
FACTOR_KL_KEY = "val_kl_factor_"


def sphere_factor_count(vae: VAE) -> int:
    """How many sphere factors with an analytic KL the latent space has (``S^2 × S^2 × S^3``: 3;
    Gaussian groups and groups with a flow other than Householder reflections are not counted)."""
    return sum(
        group.count
        for index, group in enumerate(vae.groups)
        if group.family != "normal" and vae.has_closed_form_kl(index)
    )


def sphere_factor_kls(kl_per_factor: Sequence[dict]) -> list[float]:
    """The mean KL of every sphere factor in :func:`factor_kl`'s result, in latent-space order
    (``S^2 × S^2 + S^3`` gives three values); Gaussian groups and flow groups without a KL value
    are left out."""
    return [
        kl
        for entry in kl_per_factor
        if entry["family"] != "normal" and entry["kl"] is not None
        for kl in entry["kl"]
    ]


def unused_sphere_factors(
    kl_per_factor: Sequence[dict], threshold: float = UNUSED_FACTOR_KL
) -> list[str]:
    """The sphere factors of :func:`factor_kl`'s result whose mean KL is below ``threshold`` nats,
    described as ``"factor 1 of S^4 × S^4 (KL 0.31 nats)"``. Gaussian dimensions are not judged
    (unused ones are common and harmless there) and neither are flow groups without a KL value."""
    unused = []
    for entry in kl_per_factor:
        if entry["family"] == "normal" or entry["kl"] is None:
            continue
        for i, kl in enumerate(entry["kl"]):
            if kl < threshold:
                unused.append(f"factor {i + 1} of {entry['group']} (KL {kl:.2f} nats)")
    return unused


def feature_metrics(vae: VAE) -> list[str]:
    """The k-NN metric of each feature of :meth:`VAE.posterior_mean_features`: geodesic on spheres,
    Euclidean for Gaussian factors."""
    metrics = []
    for group in vae.groups:
        if group.family == "normal":
            metrics.append("euclidean")
        else:
            metrics.extend(["geodesic"] * max(group.count, 1))
    return metrics


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
    """5-NN accuracy on test posterior features with ``n`` labelled training points, for each ``n``
    in ``sizes``: ``{"<n>": accuracy}``; empty without labels. Distances add over latent factors:
    geodesic on sphere factors, Euclidean on Gaussian ones.

    At most ``limit`` points of each split are encoded (:func:`eval_indices`); a size above the
    training points available is lowered to that number (and keyed by it).
    """
    if not sizes or train.labels is None or test.labels is None:
        return {}
    train_features = posterior_features(vae, train, batch_size=batch_size, limit=limit, seed=seed)
    test_features = posterior_features(vae, test, batch_size=batch_size, limit=limit, seed=seed + 1)
    train_labels = train.labels[eval_indices(train, limit)]
    test_labels = test.labels[eval_indices(test, limit)]
    n_train = train_labels.shape[0]
    metrics = feature_metrics(vae)
    result = {}
    for n in sorted({min(int(s), n_train) for s in sizes}):
        result[str(n)] = knn_accuracy(
            train_features,
            train_labels,
            test_features,
            test_labels,
            num_labelled=n,
            metric=metrics,
            seed=seed,
        )
    return result

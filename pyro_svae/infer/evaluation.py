r"""Evaluation: importance-sampled marginal log-likelihood, ELBO terms and k-NN accuracy.

The marginal log-likelihood of each data point is estimated as in the S-VAE paper,

.. math:: \log p(x) \approx \log \frac{1}{S} \sum_{s=1}^{S}
          \frac{p(x \mid z_s)\, p(z_s)}{q(z_s \mid x)}, \qquad z_s \sim q(z \mid x),

for any model/guide pair whose guide sites have a ``log_prob`` (spheres, products, Gaussians, flows), by
running the guide under a vectorised particle plate and replaying the model: memory is bounded by drawing
the ``S`` samples in chunks of ``chunk_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from .elbo import AnnealedELBO

__all__ = ["evaluate", "importance_log_likelihood", "knn_accuracy"]


def _per_datapoint(site: dict, num_dims: int, data_dim: int) -> Tensor:
    """Unscaled log density of a site reduced to shape ``(S, N)``: sum over every dim but particle/data."""
    log_p = site["fn"].log_prob(site["value"])
    while log_p.dim() < num_dims:
        log_p = log_p.unsqueeze(0)
    keep = {0, num_dims + data_dim}
    others = [d for d in range(num_dims) if d not in keep]
    return log_p.sum(others) if others else log_p


def _data_frame_dim(trace, data_plate: str) -> int:
    for site in trace.nodes.values():
        if site["type"] == "sample":
            for frame in site["cond_indep_stack"]:
                if frame.name == data_plate:
                    return frame.dim
    raise ValueError(f"no plate named {data_plate!r} found: the model must plate its data points")


@torch.no_grad()
def importance_log_likelihood(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 500,
    chunk_size: int = 100,
    max_plate_nesting: int = 2,
    data_plate: str = "data",
    **kwargs,
) -> Tensor:
    """Importance-sampled :math:`\\log p(x)` per data point, shape ``(N,)`` for a batch of ``N`` points.

    ``model`` and ``guide`` are called with ``*args, **kwargs`` (the batch, unscaled: do not pass
    ``num_data``). Every sample site must lie in the plate ``data_plate``.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError("num_samples and chunk_size must be positive")
    num_dims = max_plate_nesting + 1
    chunks = []
    remaining = num_samples
    while remaining > 0:
        size = min(chunk_size, remaining)
        remaining -= size
        particles = pyro.plate("_importance_particles", size, dim=-num_dims)
        guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        data_dim = _data_frame_dim(model_trace, data_plate)
        log_w = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            log_w = log_w + _per_datapoint(site, num_dims, data_dim)
            if not site["is_observed"]:
                log_w = log_w - _per_datapoint(guide_trace.nodes[name], num_dims, data_dim)
        chunks.append(log_w)
    log_w = torch.cat(chunks, dim=0)
    return torch.logsumexp(log_w, dim=0) - math.log(num_samples)


@torch.no_grad()
def evaluate(
    model: Callable,
    guide: Callable,
    batches: Iterable[Tensor],
    *,
    num_samples: int = 500,
    chunk_size: int = 100,
    max_plate_nesting: int = 2,
    progress: bool = False,
) -> dict[str, float]:
    """Average per data point of LL (importance sampled), ELBO, reconstruction RE and KL, as in the papers.

    ``batches`` yields data tensors (a :class:`~pyro_svae.data.BatchLoader`'s ``x``, or plain tensors).
    ``num_samples=0`` skips the (expensive) LL estimate.
    """
    elbo = AnnealedELBO(max_plate_nesting=max_plate_nesting)
    totals = {"ll": 0.0, "elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
    count = 0
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="evaluating", leave=False)
    for batch in iterator:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        elbo.loss(model, guide, x)
        terms = elbo.last_terms
        totals["elbo"] += terms.reconstruction - terms.kl
        totals["reconstruction"] += terms.reconstruction
        totals["kl"] += terms.kl
        if num_samples > 0:
            totals["ll"] += (
                importance_log_likelihood(
                    model,
                    guide,
                    x,
                    num_samples=num_samples,
                    chunk_size=chunk_size,
                    max_plate_nesting=max_plate_nesting,
                )
                .sum()
                .item()
            )
        count += x.shape[0]
    if count == 0:
        raise ValueError("evaluate() got no data")
    result = {key: value / count for key, value in totals.items()}
    if num_samples == 0:
        result["ll"] = float("nan")
    return result


def _distance(train: list[Tensor], test: list[Tensor], metric: str) -> Tensor:
    """Pairwise distances ``(n_test, n_train)`` summed over latent factors."""
    total = 0.0
    for a, b in zip(test, train, strict=True):
        if metric == "euclidean":
            total = total + torch.cdist(a, b)
        else:
            cosine = (
                torch.nn.functional.normalize(a, dim=-1)
                @ torch.nn.functional.normalize(b, dim=-1).T
            ).clamp(-1, 1)
            total = total + (torch.arccos(cosine) if metric == "geodesic" else 1.0 - cosine)
    return total


@torch.no_grad()
def knn_accuracy(
    train_features: list[Tensor],
    train_labels: Tensor,
    test_features: list[Tensor],
    test_labels: Tensor,
    *,
    num_labelled: int | None = None,
    k: int = 5,
    metric: str = "geodesic",
    seed: int = 0,
    chunk_size: int = 1000,
) -> float:
    """k-nearest-neighbour accuracy on posterior features (Table 2 of the S-VAE paper).

    Features are lists with one ``(n, m)`` tensor per latent factor; distances add over factors
    (``"geodesic"``: arc length on each sphere, ``"cosine"``: 1 - cosine, ``"euclidean"``). Only
    ``num_labelled`` training points, drawn with ``seed``, are used as the labelled set (all if ``None``).
    Majority vote, ties broken towards the nearest neighbour's class.
    """
    if metric not in ("geodesic", "cosine", "euclidean"):
        raise ValueError(f"metric must be 'geodesic', 'cosine' or 'euclidean', got {metric!r}")
    n_train = train_labels.shape[0]
    if num_labelled is not None:
        if not 0 < num_labelled <= n_train:
            raise ValueError(f"num_labelled must be in [1, {n_train}], got {num_labelled}")
        pick = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:num_labelled]
        train_features = [f[pick] for f in train_features]
        train_labels = train_labels[pick]
    k = min(k, train_labels.shape[0])
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, test_labels.shape[0], chunk_size):
        chunk = [f[start : start + chunk_size] for f in test_features]
        d = _distance(train_features, chunk, metric)
        nearest = d.topk(k, dim=1, largest=False).indices  # sorted nearest first
        votes = train_labels[nearest]
        counts = torch.nn.functional.one_hot(votes, num_classes).sum(1).float()
        # tie-break: a tiny bonus for the class of the nearest neighbour
        counts[torch.arange(votes.shape[0]), votes[:, 0]] += 0.5
        correct += (counts.argmax(1) == test_labels[start : start + chunk_size]).sum().item()
    return correct / test_labels.shape[0]

r"""Evaluation: importance-sampled marginal log-likelihood, ELBO terms and k-NN accuracy.

The marginal log-likelihood of each data point is estimated as in the S-VAE paper,

.. math:: \log p(x) \approx \log \frac{1}{S} \sum_{s=1}^{S}
          \frac{p(x \mid z_s)\, p(z_s)}{q(z_s \mid x)}, \qquad z_s \sim q(z \mid x),

for any model/guide pair whose guide sites have a ``log_prob`` (spheres, products, Gaussians, flows).

How it is computed (and why it is fast):

* the guide runs **once** for all ``S`` samples, under a vectorised particle plate, and
  :math:`\log q(z_s \mid x)` is scored right away (so a flow's cached inverse is used); the encoder is
  therefore evaluated once per data point, not once per chunk;
* the model is replayed on chunks of ``chunk_size`` samples (a slice of the guide's values along the
  particle dim), which bounds the memory of the decoder's output; by default the chunk is sized so that
  ``chunk × N`` stays near :data:`AUTO_CHUNK_ROWS` (the decoder's temporaries then stay in cache and
  are recycled by the allocator instead of being page-faulted in afresh);
* a Bernoulli observation given by logits (``Bernoulli(logits=l).to_event(k)``) is scored as
  :math:`\sum_j x_j l_j - \operatorname{softplus}(l_j)` reduced at once over its event dims, without
  the elementwise log-probability tensor that ``log_prob`` would build (11-22 % less time for an MLP
  VAE on MNIST); any other distribution uses its own ``log_prob``.

For the MLP S-VAE on static MNIST (10000 test points × 500 samples) this is about 2× faster than
tracing guide and model per chunk of 100 samples; ``benchmarks/evaluation.py`` times it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import pyro
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Bernoulli, Independent

from .elbo import AnnealedELBO

__all__ = [
    "AUTO_CHUNK_ROWS",
    "AUTO_CHUNK_ROWS_CUDA",
    "evaluate",
    "importance_log_likelihood",
    "knn_accuracy",
]

#: with ``chunk_size=None``, samples per model pass are ``max(1, AUTO_CHUNK_ROWS // N)`` for ``N``
#: data points (16 for the usual evaluation batch of 500): on 2 CPU cores 2048-8192 rows were
#: equally fast, 16384 and more 1.4-1.7x slower (see docs/benchmarks.md)
AUTO_CHUNK_ROWS = 8192
#: the same on a GPU, where larger passes keep it busy
AUTO_CHUNK_ROWS_CUDA = 131072
#: the guide runs on at most this many samples at a time (more only if ``chunk_size`` is larger)
_GUIDE_CHUNK = 1000


def _bernoulli_logits(fn) -> tuple[Tensor, int] | None:
    """``(logits, event_dims)`` when ``fn`` is ``Bernoulli(logits=...)``, possibly ``Independent``
    (a subclass with its own ``log_prob`` does not qualify)."""
    event_dims = 0
    while isinstance(fn, Independent):
        event_dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    if (
        not isinstance(fn, Bernoulli)
        or type(fn).log_prob is not Bernoulli.log_prob
        or "logits" not in vars(fn)
    ):
        return None
    return fn.logits, event_dims


def _site_log_prob(fn, value: Tensor) -> Tensor:
    """``fn.log_prob(value)``, with a direct path for Bernoulli logits ``l``: the elementwise
    ``x l - softplus(l)``, then the sum over the event dims. Summing per element (rather than
    ``sum(x l) - sum(softplus(l))``, two large sums that cancel for a well-fitted decoder) keeps
    float32 rounding at the level of ``log_prob``'s; it skips ``Bernoulli``'s broadcasting and
    validation and one temporary."""
    bernoulli = _bernoulli_logits(fn)
    if bernoulli is None:
        return fn.log_prob(value)
    logits, event_dims = bernoulli
    logits, value = torch.broadcast_tensors(logits, value)
    log_p = F.softplus(logits).neg_().addcmul_(value, logits)
    return log_p.sum(tuple(range(-event_dims, 0))) if event_dims else log_p


def _per_datapoint(log_p: Tensor, num_dims: int, data_dim: int) -> Tensor:
    """An unscaled log density (batch shape) reduced to shape ``(S, N)``: sum over every dim but
    particle/data."""
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


def _sliced_trace(trace, start: int, stop: int, num_dims: int):
    """The guide's sample values restricted to particles ``start:stop`` (for ``poutine.replay``)."""
    sliced = poutine.Trace()
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        value = site["value"]
        dim = (
            -1 if site_is_subsample(site) else value.dim() - len(site["fn"].event_shape) - num_dims
        )
        sliced.add_node(
            name,
            type="sample",
            is_observed=site["is_observed"],
            value=value.narrow(dim, start, stop - start) if dim >= 0 else value,
            infer=site["infer"],
        )
    return sliced


def _num_points(trace, log_q: dict[str, Tensor], data_plate: str) -> int | None:
    """The number of data points, read off the guide's scores along the data plate's dim."""
    for name, log_p in log_q.items():
        for frame in trace.nodes[name]["cond_indep_stack"]:
            if frame.name == data_plate and -frame.dim <= log_p.dim():
                return log_p.shape[frame.dim]
    return None


@torch.no_grad()
def importance_log_likelihood(
    model: Callable,
    guide: Callable,
    *args,
    num_samples: int = 500,
    chunk_size: int | None = None,
    max_plate_nesting: int = 2,
    data_plate: str = "data",
    **kwargs,
) -> Tensor:
    """Importance-sampled :math:`\\log p(x)` per data point, shape ``(N,)`` for a batch of ``N`` points.

    ``model`` and ``guide`` are called with ``*args, **kwargs`` (the batch, unscaled: do not pass
    ``num_data``). Every sample site must lie in the plate ``data_plate``. ``chunk_size`` is the
    number of samples per model pass (``None``: ``AUTO_CHUNK_ROWS // N``, at least 1); the guide
    draws ``max(chunk_size, 1000)`` samples per pass (all ``num_samples`` when fewer).
    """
    if num_samples < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError("num_samples and chunk_size must be positive")
    num_dims = max_plate_nesting + 1
    guide_chunk = max(_GUIDE_CHUNK, chunk_size or 0)
    chunks = []
    drawn = 0
    while drawn < num_samples:
        size = min(guide_chunk, num_samples - drawn)
        drawn += size
        particles = pyro.plate("_importance_particles", size, dim=-num_dims)
        guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
        # score q at once, on the very tensors sampled (a flow's inverse then comes from its cache)
        log_q = {
            name: site["fn"].log_prob(site["value"])
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        }
        step = chunk_size
        if step is None:
            n = _num_points(guide_trace, log_q, data_plate)
            on_gpu = any(v.is_cuda for v in log_q.values())
            rows = AUTO_CHUNK_ROWS_CUDA if on_gpu else AUTO_CHUNK_ROWS
            step = size if n is None else max(1, rows // max(1, n))
        for start in range(0, size, step):
            stop = min(start + step, size)
            particles = pyro.plate("_importance_particles", stop - start, dim=-num_dims)
            replayed = _sliced_trace(guide_trace, start, stop, num_dims)
            model_trace = poutine.trace(poutine.replay(particles(model), trace=replayed)).get_trace(
                *args, **kwargs
            )
            data_dim = _data_frame_dim(model_trace, data_plate)
            log_w = 0.0
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                log_p = _site_log_prob(site["fn"], site["value"])
                log_w = log_w + _per_datapoint(log_p, num_dims, data_dim)
                if not site["is_observed"]:
                    log_qs = log_q[name]
                    dim = log_qs.dim() - num_dims
                    if dim >= 0:
                        log_qs = log_qs.narrow(dim, start, stop - start)
                    log_w = log_w - _per_datapoint(log_qs, num_dims, data_dim)
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
    chunk_size: int | None = None,
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


def _distance(train: list[Tensor], test: list[Tensor], metrics: Sequence[str]) -> Tensor:
    """Pairwise distances ``(n_test, n_train)`` summed over latent factors, one metric per factor."""
    total = 0.0
    for a, b, metric in zip(test, train, metrics, strict=True):
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
    metric: str | Sequence[str] = "geodesic",
    seed: int = 0,
    chunk_size: int = 1000,
) -> float:
    """k-nearest-neighbour accuracy on posterior features (Table 2 of the S-VAE paper).

    Features are lists with one ``(n, m)`` tensor per latent factor; distances add over factors
    (``"geodesic"``: arc length on each sphere, ``"cosine"``: 1 - cosine, ``"euclidean"``; one metric
    for all factors, or a sequence with one per factor, e.g. Euclidean for Gaussian factors). Only
    ``num_labelled`` training points, drawn with ``seed``, are used as the labelled set (all if ``None``).
    Majority vote, ties broken towards the nearest neighbour's class.
    """
    metrics = [metric] * len(test_features) if isinstance(metric, str) else list(metric)
    if len(metrics) != len(test_features):
        raise ValueError(f"got {len(metrics)} metrics for {len(test_features)} latent factors")
    for name in metrics:
        if name not in ("geodesic", "cosine", "euclidean"):
            raise ValueError(f"metric must be 'geodesic', 'cosine' or 'euclidean', got {name!r}")
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
        d = _distance(train_features, chunk, metrics)
        nearest = d.topk(k, dim=1, largest=False).indices  # sorted nearest first
        votes = train_labels[nearest]
        counts = torch.nn.functional.one_hot(votes, num_classes).sum(1).float()
        # tie-break: a tiny bonus for the class of the nearest neighbour
        counts[torch.arange(votes.shape[0]), votes[:, 0]] += 0.5
        correct += (counts.argmax(1) == test_labels[start : start + chunk_size]).sum().item()
    return correct / test_labels.shape[0]

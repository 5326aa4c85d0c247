"""Capped evaluations use a fixed random subset (not a class-sorted prefix); k-NN metric per factor."""

from __future__ import annotations

import pytest
import torch

from pyro_svae.data import BinaryImageData
from pyro_svae.infer import knn_accuracy
from pyro_svae.models import VAE
from pyro_svae.train.evaluation import eval_batches, eval_indices, feature_metrics, knn_scores


def _sorted_by_class(n: int = 200) -> BinaryImageData:
    labels = torch.arange(10).repeat_interleave(n // 10)  # like static MNIST's test file
    images = torch.rand(n, 16, generator=torch.Generator().manual_seed(0)).round()
    return BinaryImageData(images, labels, image_shape=(1, 4, 4), name="sorted", num_classes=10)


def test_capped_evaluation_is_a_fixed_random_subset():
    data = _sorted_by_class()
    idx = eval_indices(data, 50)
    assert idx.shape == (50,)
    assert torch.equal(idx, eval_indices(data, 50))  # the same points at every evaluation
    assert len(data.labels[idx].unique()) == 10  # a prefix of 50 would hold 3 classes only
    assert torch.equal(eval_indices(data, None), torch.arange(200))
    assert torch.equal(eval_indices(data, 1000), torch.arange(200))
    batches = list(eval_batches(data, 16, limit=50))
    assert torch.equal(torch.cat(batches), data.images[idx])


def test_knn_uses_euclidean_for_gaussian_factors():
    vae = VAE("vmf:2+normal:3", 16, hidden=(8,))
    assert feature_metrics(vae) == ["geodesic", "euclidean"]
    assert feature_metrics(VAE("vmf:4,4", 16, hidden=(8,))) == ["geodesic", "geodesic"]
    # Gaussian features that differ only in their norm: cosine/geodesic cannot tell them apart
    train = [torch.tensor([[1.0, 0.0], [3.0, 0.0]])]
    test = [torch.tensor([[2.9, 0.0]])]
    labels = torch.tensor([0, 1])
    assert knn_accuracy(train, labels, test, torch.tensor([1]), k=1, metric=["euclidean"]) == 1.0
    with pytest.raises(ValueError, match="metrics for"):
        knn_accuracy(train, labels, test, torch.tensor([1]), metric=["euclidean", "geodesic"])


def test_knn_scores_label_the_subset_it_encodes(monkeypatch):
    """Features that are the one-hot label of each image: k-NN is perfect exactly when the labels
    are those of the points encoded (a prefix of labels with a subset of features gives ~10 %)."""
    labels = torch.arange(10).repeat_interleave(30)  # sorted by class
    images = torch.zeros(300, 16)
    images[torch.arange(300), labels] = 1.0
    data = BinaryImageData(images, labels, image_shape=(1, 4, 4), name="onehot", num_classes=10)
    vae = VAE("vmf:9", 16, hidden=(8,))
    monkeypatch.setattr(vae, "posterior_mean_features", lambda x: [x[:, :10]])
    scores = knn_scores(vae, data, data, [150, 1000], batch_size=32, limit=150)
    assert scores == {"150": 1.0}  # 1000 is lowered to the 150 encoded training points

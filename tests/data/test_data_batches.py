"""ImageData / BinaryImageData and the batch iterator, on synthetic tensors."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_svae.data import Batch, BinaryImageData, ImageData, bernoulli


def _grey(n: int = 53, seed: int = 0) -> BinaryImageData:
    g = torch.Generator().manual_seed(seed)
    return BinaryImageData(
        torch.rand(n, 12, generator=g),
        torch.arange(n) % 3,
        dynamic=True,
        image_shape=(1, 3, 4),
        name="toy",
        split="train",
        num_classes=3,
    )


def test_epoch_covers_every_index_once() -> None:
    data = _grey()
    loader = data.batches(10, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 6
    batches = list(loader)
    assert all(isinstance(b, Batch) for b in batches)
    assert [len(b.idx) for b in batches] == [10] * 5 + [3]
    idx = torch.cat([b.idx for b in batches])
    assert sorted(idx.tolist()) == list(range(53))
    assert idx.tolist() != list(range(53))  # shuffled
    for b in batches:
        torch.testing.assert_close(b.y, data.labels[b.idx])
        assert b.x.shape == (len(b.idx), 12)
        assert set(b.x.unique().tolist()) <= {0.0, 1.0}


def test_drop_last_and_no_shuffle() -> None:
    data = _grey()
    loader = data.batches(10, shuffle=False, drop_last=True)
    assert len(loader) == 5
    idx = torch.cat([b.idx for b in loader])
    assert idx.tolist() == list(range(50))
    with pytest.raises(ValueError, match="positive integer"):
        data.batches(0)


def test_reproducible_given_generator_and_fresh_each_epoch() -> None:
    data = _grey()

    def epoch(loader):
        return torch.cat([torch.cat([b.idx[:, None].float(), b.x], 1) for b in loader])

    a = epoch(data.batches(8, generator=torch.Generator().manual_seed(3)))
    b = epoch(data.batches(8, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(a, b)
    loader = data.batches(8, generator=torch.Generator().manual_seed(3))
    first, second = epoch(loader), epoch(loader)
    assert not torch.equal(first, second)  # new permutation and new binarisation


def test_dynamic_draws_differ_and_average_to_the_grey_values() -> None:
    probs = torch.full((400, 50), 0.3)
    data = BinaryImageData(probs, dynamic=True, image_shape=(50,))
    idx = torch.arange(400)
    g = torch.Generator().manual_seed(0)
    x1, x2 = data.draw(idx, g), data.draw(idx, g)
    assert not torch.equal(x1, x2)
    assert abs(x1.mean().item() - 0.3) < 0.01
    assert torch.equal(data[idx].unique(), torch.tensor([0.0, 1.0]))


def test_indexing_for_plate_subsampling() -> None:
    images = (torch.rand(20, 6, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    data = BinaryImageData(images, image_shape=(6,))
    idx = torch.tensor([4, 0, 19])
    torch.testing.assert_close(data[idx], images[idx])
    torch.testing.assert_close(data[3], images[3])
    torch.testing.assert_close(data[2:5], images[2:5])

    def model():
        with pyro.plate("data", len(data), subsample=idx) as ind:
            pyro.sample("x", dist.Bernoulli(probs=torch.full((6,), 0.5)).to_event(1), obs=data[ind])

    trace = pyro.poutine.trace(model).get_trace()
    assert trace.nodes["x"]["value"].shape == (3, 6)
    assert trace.nodes["data"]["value"].tolist() == idx.tolist()


def test_grey_data_is_returned_as_stored() -> None:
    images = torch.rand(7, 4)
    data = ImageData(images, image_shape=(1, 2, 2), name="g")
    assert data.likelihood == "grey"
    assert data.dim == 4
    assert len(data) == 7
    torch.testing.assert_close(next(iter(data.batches(7, shuffle=False))).x, images)
    assert next(iter(data.batches(7))).y is None
    assert "ImageData('g'" in repr(data)


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        ImageData(torch.tensor([[1.5]]), image_shape=(1,))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        ImageData(torch.tensor([[float("nan")]]), image_shape=(1,))
    with pytest.raises(ValueError, match="image_shape"):
        ImageData(torch.zeros(2, 5), image_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="labels shape"):
        ImageData(torch.zeros(2, 4), torch.zeros(3), image_shape=(4,))
    with pytest.raises(ValueError, match="must be 0 or 1"):
        BinaryImageData(torch.full((2, 4), 0.5), image_shape=(4,))


def test_to_same_device_is_a_no_op() -> None:
    data = _grey()
    assert data.to("cpu") is data


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_with_cpu_generator() -> None:
    data = _grey().to("cuda")
    assert isinstance(data, BinaryImageData)
    assert data.name == "toy"
    assert data.num_classes == 3
    assert data.dynamic
    assert data.device.type == "cuda"
    assert data.labels.device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    for b in data.batches(10, generator=g):
        assert b.x.device.type == "cuda"
        assert b.idx.device.type == "cuda"
    x = bernoulli(torch.full((3, 3), 0.5, device="cuda"), torch.Generator().manual_seed(0))
    y = bernoulli(torch.full((3, 3), 0.5), torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.cpu(), y)

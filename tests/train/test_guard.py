"""The finiteness check that guards every training step (:func:`pyro_svae.train.guard.all_finite`)."""

import pytest
import torch

from pyro_svae.train.guard import all_finite


def _grads(dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    shapes = [(256, 784), (256,), (10, 128), (10,), (784,)]
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_gradients_pass(dtype):
    assert all_finite(_grads(dtype))
    assert all_finite([])


@pytest.mark.parametrize(
    "bad",
    [[float("nan")], [float("inf")], [float("-inf")], [float("inf"), float("-inf")]],
    ids=["nan", "inf", "-inf", "inf and -inf (sum nan)"],
)
@pytest.mark.parametrize("where", [0, 3, 4])
def test_any_non_finite_entry_is_caught(bad, where):
    grads = _grads()
    flat = grads[where].view(-1)
    flat[7 : 7 + len(bad)] = torch.tensor(bad)
    assert not all_finite(grads)


def test_finite_entries_whose_sum_overflows_are_still_finite():
    # float32 max is 3.4e38: the sum of these is inf, every entry is finite
    huge = torch.full((4,), 3e38, dtype=torch.float32)
    assert torch.isinf(huge.sum())
    assert all_finite([torch.zeros(3), huge])
    assert not all_finite([torch.tensor([float("nan")]), huge])


def test_agrees_with_the_elementwise_check_on_random_cases():
    generator = torch.Generator().manual_seed(1)
    specials = torch.tensor([float("nan"), float("inf"), float("-inf"), 3e38, -3e38])
    for _ in range(200):
        grads = [torch.randn(int(n), generator=generator) for n in torch.randint(1, 6, (3,))]
        for g in grads:
            if torch.rand((), generator=generator) < 0.3:
                index = torch.randint(len(g), (), generator=generator)
                g[index] = specials[torch.randint(len(specials), (), generator=generator)]
        expected = all(bool(torch.isfinite(g).all()) for g in grads)
        assert all_finite(grads) == expected

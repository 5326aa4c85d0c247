"""Mini-batches drawn by index from in-memory tensors, with per-batch Bernoulli binarisation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .imagedata import ImageData

__all__ = ["Batch", "BatchLoader", "bernoulli"]


class Batch(NamedTuple):
    """A mini-batch: images ``x`` (B, D), labels ``y`` (B,) or ``None``, indices ``idx`` (B,)."""

    x: torch.Tensor
    y: torch.Tensor | None
    idx: torch.Tensor


def bernoulli(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Bernoulli(``probs``) draw as floats 0/1, from ``generator`` (else torch's global RNG).

    A generator on another device than ``probs`` draws on its own device, so a CPU generator gives
    the same draws for CPU and CUDA data.
    """
    if generator is None or generator.device == probs.device:
        return torch.bernoulli(probs, generator=generator)
    return torch.bernoulli(probs.to(generator.device), generator=generator).to(probs.device)


class BatchLoader:
    """Iterate over an :class:`~pyro_svae.data.ImageData` in mini-batches, one epoch per ``iter``.

    Each epoch draws a fresh permutation (if ``shuffle``) and, for dynamically binarised data, fresh
    Bernoulli draws, both from ``generator`` when given (reproducible) or torch's global RNG.
    Batches are gathered by index from the in-memory tensors: no per-item Python work.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[Batch]:
        n, g = len(self.data), self.generator
        if self.shuffle:
            order = torch.randperm(n, generator=g, device=g.device if g is not None else "cpu")
        else:
            order = torch.arange(n)
        order = order.to(self.data.device)
        labels = self.data.labels
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            x = self.data.draw(idx, generator=g)
            yield Batch(x, None if labels is None else labels.index_select(0, idx), idx)

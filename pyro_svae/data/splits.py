"""Index sets of the train / valid / test splits of one source array."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["split_indices"]


def split_indices(
    sizes: Mapping[str, int], *, shuffle: bool, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Consecutive blocks of ``sizes[name]`` rows of a source of ``sum(sizes.values())`` rows.

    With ``shuffle`` the rows are first permuted by ``torch.randperm`` under a CPU generator seeded
    with ``seed`` (the same split on every platform and device); otherwise they are taken in file
    order. Each index set is sorted, the sets are disjoint, and their union is every row.
    """
    total = sum(sizes.values())
    if shuffle:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    else:
        order = torch.arange(total)
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = order[start : start + size].sort().values
        start += size
    return out

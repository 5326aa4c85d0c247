"""Device selection."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:<index>"`` as a :class:`torch.device`, checking it exists.

    :raises ValueError: for another device type, or CUDA requested but not available.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {name!r}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu"
        )
    count = torch.cuda.device_count()
    index = 0 if device.index is None else device.index
    if index >= count:
        raise ValueError(f"device {name!r} requested but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)

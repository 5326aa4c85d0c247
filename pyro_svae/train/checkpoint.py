"""Atomic file writes, checkpoints and random-number-generator states.

A file is written to a temporary file in the same folder, flushed and ``fsync``-ed, then moved over
the target with :func:`os.replace` (atomic on POSIX and Windows), so an interruption or a failed
write leaves the previous file intact. Checkpoints hold only tensors and plain Python values and are
read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_VERSION",
    "atomic_write",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "write_json",
]

CHECKPOINT_VERSION = 1


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then replace ``path`` with it.

    On any exception (including :class:`KeyboardInterrupt`) the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _json_safe(value: Any) -> Any:
    """Non-finite floats become ``None`` (strict JSON has no NaN / Infinity)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], obj: Any, *, lines: bool = False) -> Path:
    """Write ``obj`` atomically as indented JSON, or (``lines=True``) a list as JSON Lines."""
    if lines:
        text = "".join(json.dumps(_json_safe(row), allow_nan=False) + "\n" for row in obj)
    else:
        text = json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Save ``state`` (tensors and plain values) atomically with :func:`torch.save`."""
    return atomic_write(path, lambda f: torch.save({"version": CHECKPOINT_VERSION, **state}, f))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    version = state.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} is a checkpoint of format version {version!r}; this pyro_svae reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return state


def capture_rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The states of torch's, Python's and NumPy's global generators and of ``generator``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (Pyro seeds it)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "data": generator.get_state(),
        "cuda": None,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(
    state: dict[str, Any], generator: torch.Generator, device: torch.device
) -> None:
    """Inverse of :func:`capture_rng_state` (the CUDA state only when resuming on CUDA)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    generator.set_state(state["data"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)

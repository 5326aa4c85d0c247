"""Where the dataset files live: one data root for every dataset, example and CLI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = [
    "ENV_VAR",
    "add_data_dir_argument",
    "default_data_root",
    "describe_data_root",
    "resolve_data_root",
    "user_cache_dir",
]

ENV_VAR = "PYRO_SVAE_DATA"


def user_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/pyro_svae``, by default ``~/.cache/pyro_svae``.

    On Windows, ``%LOCALAPPDATA%\\pyro_svae``.
    """
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.expanduser() / "pyro_svae"


def default_data_root() -> Path:
    """The data root when none is given: ``$PYRO_SVAE_DATA`` if set and not empty, else
    ``user_cache_dir() / "data"``."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "data"


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` (``~`` expanded) if given, else :func:`default_data_root`."""
    if root is None or str(root) == "":
        return default_data_root()
    return Path(root).expanduser()


def describe_data_root(root: str | os.PathLike[str] | None = None) -> str:
    """One line naming the data root in use and where that choice came from (for error messages)."""
    path = resolve_data_root(root)
    if root is not None and str(root) != "":
        origin = "given as root / --data-dir"
    elif os.environ.get(ENV_VAR, "").strip():
        origin = f"from ${ENV_VAR}"
    else:
        origin = f"the default; ${ENV_VAR} is not set"
    return f"Data root in use: {path} ({origin})."


def add_data_dir_argument(parser: argparse.ArgumentParser) -> argparse.Action:
    """Add the shared ``--data-dir DIR`` option to an argparse parser and return its action.

    The parsed value is a :class:`~pathlib.Path` or ``None``; pass it on as ``root=args.data_dir``,
    so that ``None`` falls back to :func:`default_data_root` at load time.
    """
    return parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            f"dataset root folder (default: ${ENV_VAR} if set, else {user_cache_dir() / 'data'}); "
            "datasets are downloaded there when missing and the network allows"
        ),
    )

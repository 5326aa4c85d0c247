"""The data root: environment variable, per-user cache default, --data-dir."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pyro_svae.data import ENV_VAR, add_data_dir_argument, default_data_root, resolve_data_root
from pyro_svae.data.root import describe_data_root, user_cache_dir


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert default_data_root() == tmp_path
    assert resolve_data_root(None) == tmp_path
    assert "from $PYRO_SVAE_DATA" in describe_data_root(None)


def test_default_is_per_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, "")  # empty counts as unset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "pyro_svae"
    assert default_data_root() == tmp_path / "pyro_svae" / "data"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_root() == tmp_path / ".cache" / "pyro_svae" / "data"
    assert "not set" in describe_data_root(None)


def test_explicit_root_beats_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, "/somewhere/else")
    assert resolve_data_root(tmp_path) == tmp_path
    assert resolve_data_root(str(tmp_path)) == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root("~/d") == tmp_path / "d"
    assert "given as root / --data-dir" in describe_data_root(tmp_path)


def test_data_dir_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    action = add_data_dir_argument(parser)
    assert action.dest == "data_dir"
    assert parser.parse_args([]).data_dir is None  # resolved at load time: env var, then cache
    assert parser.parse_args(["--data-dir", str(tmp_path)]).data_dir == tmp_path
    assert ENV_VAR in action.help

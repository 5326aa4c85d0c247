"""Atomic writes, checkpoint round trip and random-state capture."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pyro_svae.train import atomic_write, load_checkpoint, save_checkpoint
from pyro_svae.train.checkpoint import capture_rng_state, restore_rng_state, write_json


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"weights": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"weights": torch.zeros(3)})
    assert torch.equal(load_checkpoint(path)["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_json(path, [{"epoch": 1}], lines=True)

    def interrupted(f):
        f.write(b'{"epoch": 1}\n{"ep')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_text() == '{"epoch": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_write_json_turns_nan_into_null(tmp_path):
    path = write_json(tmp_path / "s.json", {"ll": float("nan"), "x": [1.0, float("inf")]})
    assert path.read_text().split() == [
        "{",
        '"ll":',
        "null,",
        '"x":',
        "[",
        "1.0,",
        "null",
        "]",
        "}",
    ]


def test_load_rejects_other_versions(tmp_path):
    torch.save({"version": 99}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(tmp_path / "c.pt")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(5)
    cpu = torch.device("cpu")
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)  # noqa: NPY002
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng_state(generator, cpu)})

    def draws():
        return (
            torch.rand(3).tolist(),
            random.random(),
            np.random.rand(),  # noqa: NPY002
            torch.rand(2, generator=generator).tolist(),
        )

    first = draws()
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], generator, cpu)
    assert draws() == first

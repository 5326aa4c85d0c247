"""Every plot function writes a non-empty image file."""

from __future__ import annotations

import json

import pytest
import torch

from pyro_svae.viz import image_grid, save_image_grid, save_reconstructions, save_training_curves


def _png_ok(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_image_grid_layout():
    images = torch.zeros(5, 6)
    images[2] = 1.0
    grid = image_grid(images, (1, 2, 3), ncol=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1)
    assert grid[1:3, 9:12].eq(1).all()  # third tile, first row
    assert grid[1:3, 1:4].eq(0).all()
    colour = image_grid(torch.rand(4, 3 * 2 * 2), (3, 2, 2))
    assert colour.shape[-1] == 3
    with pytest.raises(ValueError, match="at least one"):
        image_grid(torch.zeros(0, 4), (1, 2, 2))


def test_save_grids_and_reconstructions(tmp_path):
    x = torch.rand(12, 28 * 20)
    assert _png_ok(save_image_grid(x, (1, 28, 20), tmp_path / "samples.png", title="samples"))
    assert _png_ok(save_reconstructions(x, 1 - x, (1, 28, 20), tmp_path / "sub" / "recon.png"))
    with pytest.raises(ValueError, match="shapes differ"):
        save_reconstructions(x, x[:3], (1, 28, 20), tmp_path / "bad.png")


def test_save_training_curves(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "\n".join(json.dumps({"epoch": e, "loss": 100 - e, "val_elbo": -100 + e}) for e in range(5))
    )
    assert _png_ok(save_training_curves(metrics, tmp_path / "curves.png"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no metrics"):
        save_training_curves(tmp_path / "empty.jsonl", tmp_path / "x.png")

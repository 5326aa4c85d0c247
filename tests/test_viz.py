"""Every plot function writes a non-empty image file; slerp and the Hammer projection are exact."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from pyro_svae.cli import main
from pyro_svae.data import ImageData, default_data_root
from pyro_svae.models import VAE
from pyro_svae.viz import (
    hammer_projection,
    image_grid,
    interpolate_latents,
    lerp,
    save_all_plots,
    save_circle_plots,
    save_hammer_plot,
    save_image_grid,
    save_interpolations,
    save_reconstructions,
    save_sphere_rotation_gif,
    save_sphere_scatter,
    save_training_curves,
    slerp,
)

PNG = b"\x89PNG\r\n\x1a\n"
SHAPE = (1, 8, 6)


def _png_ok(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


def _gif_frames(path) -> int:
    data = path.read_bytes()
    assert data[:6] in (b"GIF87a", b"GIF89a")
    assert len(data) > 1000
    with Image.open(path) as image:
        return image.n_frames


def _unit(*shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def _angles(path: torch.Tensor) -> torch.Tensor:
    """Angles between consecutive points of ``(..., steps, d)``."""
    p, q = path[..., 1:, :], path[..., :-1, :]
    return 2 * torch.atan2((p - q).norm(dim=-1), (p + q).norm(dim=-1))


@pytest.fixture
def labelled_s2():
    z = _unit(300, 3)
    return z, torch.arange(300) % 4


def _tiny_vae(latent: str) -> VAE:
    return VAE(latent, math.prod(SHAPE), hidden=(8,), image_shape=SHAPE)


# -------------------------------------------------------------------------------------------------
# image grids, reconstructions, curves


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


def test_training_curves_draw_a_group_of_keys_in_one_panel(tmp_path, monkeypatch):
    import pyro_svae.viz.curves as curves

    figures = []
    monkeypatch.setattr(curves, "save_figure", lambda fig, path: figures.append(fig) or path)
    metrics = tmp_path / "metrics.jsonl"
    rows = [
        {"epoch": e, "val_kl": 3.0, "val_kl_factor_1": 1.0, "val_kl_factor_2": 2.0} for e in (1, 2)
    ]
    metrics.write_text("\n".join(json.dumps(r) for r in rows))
    save_training_curves(
        metrics, tmp_path / "c.png", keys=["val_kl", ("val_kl_factor_1", "val_kl_factor_2")]
    )
    single, grouped = figures[0].axes
    assert single.get_ylabel() == "val_kl"
    assert single.get_legend() is None
    assert [line.get_ydata().tolist() for line in grouped.get_lines()] == [[1.0, 1.0], [2.0, 2.0]]
    legend = [t.get_text() for t in grouped.get_legend().get_texts()]
    assert legend == ["val_kl_factor_1", "val_kl_factor_2"]


# -------------------------------------------------------------------------------------------------
# slerp and factor-wise interpolation


@pytest.mark.parametrize("d", [2, 3, 10])
def test_slerp_endpoints_unit_norm_and_constant_speed(d):
    a, b = _unit(5, d), _unit(5, d)
    path = slerp(a, b, 9)
    assert path.shape == (5, 9, d)
    assert torch.equal(path[:, 0], a)
    assert torch.equal(path[:, -1], b)
    ones = torch.ones(5, 9, dtype=torch.float64)
    torch.testing.assert_close(path.norm(dim=-1), ones, atol=1e-14, rtol=0)
    steps = _angles(path)
    total = torch.arccos((a * b).sum(-1).clamp(-1, 1))
    torch.testing.assert_close(steps, (total / 8).unsqueeze(-1).expand(5, 8), atol=1e-10, rtol=0)
    # every point lies in the plane of a and b: on the great circle through them
    q, _ = torch.linalg.qr(torch.stack([a, b], dim=-1))  # (5, d, 2)
    off_plane = path - path @ q @ q.transpose(1, 2)
    assert off_plane.abs().max() < 1e-12


def test_slerp_matches_the_textbook_formula():
    a, b = _unit(3), _unit(3)
    omega = torch.arccos(a @ b)
    t = torch.linspace(0, 1, 6, dtype=torch.float64).unsqueeze(-1)
    expected = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    torch.testing.assert_close(slerp(a, b, 6), expected, atol=1e-12, rtol=0)


def test_slerp_float32_keeps_dtype_and_is_unit():
    a, b = _unit(4, 6, dtype=torch.float32), _unit(4, 6, dtype=torch.float32)
    path = slerp(a, b, 7)
    assert path.dtype == torch.float32
    assert torch.equal(path[:, 0], a)
    assert torch.equal(path[:, -1], b)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(4, 7), atol=2e-7, rtol=0)


def test_slerp_projects_inputs_and_broadcasts_batches():
    a, b = _unit(3), _unit(2, 4, 3)
    path = slerp(3 * a, b, 5)  # a scaled off the sphere: projected
    assert path.shape == (2, 4, 5, 3)
    torch.testing.assert_close(path[..., 0, :], a.expand(2, 4, 3), atol=1e-15, rtol=0)
    torch.testing.assert_close(path[1, 2], slerp(a, b[1, 2], 5))


def test_slerp_nearly_equal_points_are_stable():
    a = _unit(4)
    same = slerp(a, a, 5)
    assert torch.isfinite(same).all()
    torch.testing.assert_close(same, a.expand(5, 4), atol=1e-15, rtol=0)
    close = torch.nn.functional.normalize(a + 1e-12 * _unit(4), dim=-1)
    path = slerp(a, close, 5)
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    assert (path - a).abs().max() < 1e-11
    tiny = torch.nn.functional.normalize(a + 1e-6 * _unit(4), dim=-1)  # above the threshold
    steps = _angles(slerp(a, tiny, 5))
    torch.testing.assert_close(steps, steps.mean().expand(4), atol=1e-12, rtol=0)


@pytest.mark.parametrize("gap", [1e-3, 1e-5, 1e-7])
def test_slerp_nearly_antipodal_float32_points_follow_the_float64_geodesic(gap):
    """float32 unit vectors are off norm 1 by an ulp; near b = -a that must not tilt the path."""
    g = torch.Generator().manual_seed(3)
    a = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    b = torch.nn.functional.normalize(-a + gap * torch.randn(500, 3, generator=g), dim=-1)
    out = slerp(a, b, 11)
    a64, b64 = a.double(), b.double()
    exact = slerp(a64 / a64.norm(dim=-1, keepdim=True), b64 / b64.norm(dim=-1, keepdim=True), 11)
    assert (out.double() - exact)[:, 1:-1].abs().max() < 1e-7  # float32 rounding of the result
    assert torch.equal(out[:, 0], a)
    assert torch.equal(out[:, -1], b)


def test_slerp_antipodal_points_take_the_documented_great_circle():
    a = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)  # smallest |a_k|: k = 1
    path = slerp(a, -a, 5)
    assert torch.equal(path[-1], -a)
    torch.testing.assert_close(path[2], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(_angles(path), torch.full((4,), math.pi / 4, dtype=torch.float64))
    assert torch.equal(slerp(a, -a, 5), path)  # deterministic
    batch = _unit(7, 5)
    path = slerp(batch, -batch, 4)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(7, 4, dtype=torch.float64))
    torch.testing.assert_close(
        _angles(path), torch.full((7, 3), math.pi / 3, dtype=torch.float64), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize(
    ("a", "b", "steps", "message"),
    [
        (torch.ones(3), torch.ones(4), 5, "same last dimension"),
        (torch.ones(1), torch.ones(1), 5, "d >= 2"),
        (torch.zeros(3), torch.ones(3), 5, "zero vector"),
        (torch.ones(3), torch.ones(3), 1, "steps must be an integer >= 2"),
        (torch.ones(2, 3), torch.ones(3, 3), 4, "do not broadcast"),
        (torch.tensor([1.0, math.nan]), torch.ones(2), 4, "non-finite"),
    ],
)
def test_slerp_bad_inputs(a, b, steps, message):
    with pytest.raises(ValueError, match=message):
        slerp(a, b, steps)


def test_lerp_and_product_interpolation():
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    line = lerp(a, b, 5)
    assert torch.equal(line[:, 0], a)
    assert torch.equal(line[:, -1], b)
    torch.testing.assert_close(line[:, 2], (a + b) / 2)

    spec = "vmf:2,1+normal:2"  # S^2 x S^1 x R^2 in R^7
    za = torch.cat([_unit(3, 3), _unit(3, 2), torch.randn(3, 2, dtype=torch.float64)], -1)
    zb = torch.cat([_unit(3, 3), _unit(3, 2), torch.randn(3, 2, dtype=torch.float64)], -1)
    path = interpolate_latents(za, zb, 6, spec)
    assert path.shape == (3, 6, 7)
    torch.testing.assert_close(path[..., :3], slerp(za[:, :3], zb[:, :3], 6))
    torch.testing.assert_close(path[..., 3:5], slerp(za[:, 3:5], zb[:, 3:5], 6))
    torch.testing.assert_close(path[..., 5:], lerp(za[:, 5:], zb[:, 5:], 6))
    # the ambient dims of a product of spheres work the same way
    torch.testing.assert_close(interpolate_latents(za[:, :5], zb[:, :5], 6, (3, 2)), path[..., :5])
    with pytest.raises(ValueError, match="last dimension 7"):
        interpolate_latents(za[:, :6], zb[:, :6], 6, spec)


# -------------------------------------------------------------------------------------------------
# S^2 and S^1 plots


def test_hammer_projection_known_values():
    points = torch.tensor(
        [[1.0, 0, 0], [0, 0, 1], [0, 0, -1], [0, 1, 0], [0, -1, 0], [1, 0, 1]],
        dtype=torch.float64,
    )
    xy = hammer_projection(points)
    side = 2 / math.sqrt(1 + 1 / math.sqrt(2))  # λ = ±π/2 on the equator
    lat45 = math.sqrt(2) * math.sqrt(0.5) / math.sqrt(1 + math.sqrt(0.5))  # φ = π/4, λ = 0
    expected = [[0, 0], [0, math.sqrt(2)], [0, -math.sqrt(2)], [side, 0], [-side, 0], [0, lat45]]
    torch.testing.assert_close(xy, torch.tensor(expected, dtype=torch.float64))
    # λ = π on the equator: the right end of the ellipse x^2/8 + y^2/2 = 1
    torch.testing.assert_close(
        hammer_projection(torch.tensor([-1.0, 1e-300, 0.0], dtype=torch.float64)),
        torch.tensor([2 * math.sqrt(2), 0.0], dtype=torch.float64),
    )
    inside = hammer_projection(_unit(1000, 3))
    assert inside.shape == (1000, 2)
    assert ((inside[:, 0] ** 2 / 8 + inside[:, 1] ** 2 / 2) <= 1 + 1e-12).all()


def test_hammer_projection_bad_shapes():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        hammer_projection(torch.ones(5, 4))
    with pytest.raises(ValueError, match="zero vector"):
        hammer_projection(torch.zeros(2, 3))


def test_hammer_and_sphere_plots(tmp_path, labelled_s2):
    z, labels = labelled_s2
    assert _png_ok(save_hammer_plot(z, labels, tmp_path / "hammer.png", title="S^2"))
    assert _png_ok(save_hammer_plot(z, None, tmp_path / "plain.png"))
    assert _png_ok(save_hammer_plot(z, torch.rand(300), tmp_path / "continuous.png"))
    assert _png_ok(save_sphere_scatter(z, labels, tmp_path / "sphere.png"))
    for save in (save_hammer_plot, save_sphere_scatter):
        with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
            save(torch.ones(10, 4), None, tmp_path / "bad.png")
        with pytest.raises(ValueError, match=r"labels must have shape \(300,\)"):
            save(z, labels[:5], tmp_path / "bad.png")


def test_sphere_rotation_gif(tmp_path, labelled_s2):
    z, labels = labelled_s2
    path = save_sphere_rotation_gif(z, labels, tmp_path / "turn.gif", frames=4, dpi=40)
    assert _gif_frames(path) == 4
    with pytest.raises(ValueError, match=r"end in \.gif"):
        save_sphere_rotation_gif(z, labels, tmp_path / "turn.png", frames=4)
    with pytest.raises(ValueError, match="frames must be an integer >= 2"):
        save_sphere_rotation_gif(z, labels, tmp_path / "turn.gif", frames=1)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        save_sphere_rotation_gif(z[:, :2], labels, tmp_path / "turn.gif", frames=4)


def test_circle_plots(tmp_path):
    labels = torch.arange(200) % 3
    two = _unit(200, 2, 2)
    assert _png_ok(save_circle_plots(two, labels, tmp_path / "circles.png"))
    assert _png_ok(save_circle_plots(two[:, 0], None, tmp_path / "one.png", histograms=False))
    assert _png_ok(save_circle_plots(list(two.unbind(1)), labels, tmp_path / "list.png"))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        save_circle_plots(_unit(200, 3), labels, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="different numbers of points"):
        save_circle_plots([two[:, 0], two[:10, 1]], None, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="names has 1 entries for 2 factors"):
        save_circle_plots(two, labels, tmp_path / "bad.png", names=["only one"])


# -------------------------------------------------------------------------------------------------
# plots of a VAE (tiny, untrained)


def test_save_interpolations(tmp_path):
    vae = _tiny_vae("vmf:2,1+normal:2")
    x = torch.rand(6, math.prod(SHAPE))
    assert _png_ok(save_interpolations(vae, x[:3], x[3:], tmp_path / "interp.png", steps=5))
    assert _png_ok(save_interpolations(vae, x[0], x[1], tmp_path / "one.png", with_inputs=False))
    with pytest.raises(ValueError, match="must both have shape"):
        save_interpolations(vae, x[:3], x[:2], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="steps must be"):
        save_interpolations(vae, x[:3], x[3:], tmp_path / "bad.png", steps=1)
    no_shape = VAE("vmf:2", math.prod(SHAPE), hidden=(8,))
    with pytest.raises(ValueError, match="needs image_shape"):
        save_interpolations(no_shape, x[:1], x[1:2], tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("latent", "expected"),
    [
        ("vmf:2", {"hammer", "sphere", "sphere_rotation"}),
        ("ps:2,1,1", {"hammer_0", "sphere_0", "sphere_rotation_0", "circles"}),
        ("normal:3", set()),
    ],
)
def test_save_all_plots(tmp_path, latent, expected):
    n = 40
    data = ImageData(
        torch.rand(n, math.prod(SHAPE)), torch.arange(n) % 5, image_shape=SHAPE, num_classes=5
    )
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"epoch": 1, "train_loss": 3.0, "val_elbo": -3.0}))
    vae = _tiny_vae(latent)
    vae.train()
    state = torch.get_rng_state()
    plots = save_all_plots(
        vae, data, tmp_path / "run", metrics_path=metrics, num_images=9, gif_frames=3
    )
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    assert vae.training
    assert set(plots) == {"samples", "reconstructions", "interpolations", "curves"} | expected
    for name, path in plots.items():
        assert path.parent == tmp_path / "run"
        if path.suffix == ".gif":
            assert _gif_frames(path) == 3, name
        else:
            assert _png_ok(path), name


def test_save_all_plots_mixes_the_classes_of_sorted_data(tmp_path, monkeypatch):
    """Test files sorted by class (static MNIST's is) must not give plots of one class only."""
    import pyro_svae.viz.report as report

    n, classes = 200, 5
    labels = torch.arange(n) // (n // classes)  # sorted: 40 zeros, 40 ones, ...
    images = torch.rand(n, math.prod(SHAPE))
    images[:, 0] = labels / 10  # pixel 0 tells the class of an image
    data = ImageData(images, labels, image_shape=SHAPE, num_classes=classes)
    seen = {}

    def spy(name, real):
        def wrapper(*args, **kwargs):
            seen.setdefault(name, []).append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(report, name, wrapper)

    for name in ("save_reconstructions", "save_interpolations", "save_hammer_plot"):
        spy(name, getattr(report, name))
    save_all_plots(
        _tiny_vae("vmf:2"), data, tmp_path, num_reconstructions=10, num_points=50, gif_frames=2
    )

    def classes_of(x):
        return set((x[:, 0] * 10).round().long().tolist())

    assert len(classes_of(seen["save_reconstructions"][0][0])) >= 3
    _, starts, ends, *_ = seen["save_interpolations"][0]
    assert len(classes_of(torch.cat([starts, ends]))) >= 3
    _, hammer_labels, *_ = seen["save_hammer_plot"][0]
    assert len(hammer_labels) == 50
    assert set(hammer_labels.tolist()) == set(range(classes))


# -------------------------------------------------------------------------------------------------
# pyro-svae train --plots


def test_cli_help_mentions_plots(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--plots" in capsys.readouterr().out


@pytest.mark.skipif(
    not (default_data_root() / "MNIST" / "raw").is_dir(), reason="MNIST files not available"
)
def test_cli_train_with_plots(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "dynamic_mnist", "--latent", "vmf:2,1", "--hidden", "16"]
    argv += ["--epochs", "1", "--max-train-batches", "2", "--max-eval-points", "60"]
    argv += ["--eval-batch-size", "60", "--ll-samples", "0", "--knn-labels", "--no-progress"]
    assert main([*argv, "--out", str(out), "--plots"]) == 0
    printed = capsys.readouterr().out
    names = ["samples", "reconstructions", "interpolations", "curves", "hammer_0", "sphere_0"]
    for name in names:
        assert _png_ok(out / f"{name}.png"), name
        assert str(out / f"{name}.png") in printed
    assert _png_ok(out / "circles.png")
    assert _gif_frames(out / "sphere_rotation_0.gif") > 1
    assert "plots" not in json.loads((out / "config.json").read_text())

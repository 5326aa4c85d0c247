"""``python -m pyro_svae train``: flags, latent parsing, errors and an end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_svae.cli import build_parser, config_from_args, latent_from_args, main
from pyro_svae.data import BinaryImageData, default_data_root
from pyro_svae.models import FlowVAE
from pyro_svae.train import TrainConfig, Trainer

FLAGS = [
    "--dataset",
    "--latent",
    "--zd",
    "--hidden",
    "--arch",
    "--likelihood",
    "--epochs",
    "--batch-size",
    "--lr",
    "--beta",
    "--kl-warmup",
    "--capacity",
    "--burn-in",
    "--look-ahead",
    "--ll-samples",
    "--seed",
    "--device",
    "--data-dir",
    "--out",
    "--resume",
    "--max-train-batches",
    "--max-eval-points",
    "--no-progress",
    "--grad-clip",
    "--grad-clip-window",
]


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text, flag
    assert "vmf:4,4" in text
    assert "MANIFOLD" in text


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("latent", "zd", "spec"),
    [
        (["vmf:4,4"], None, "vmf:4,4"),
        (["vmf", "4", "4"], None, "vmf:4,4"),
        (["vmf"], [4, 4], "vmf:4,4"),
        (None, [9], "vmf:9"),
        (["vmf:4", "normal:2"], None, "vmf:4+normal:2"),
        (None, None, None),
    ],
)
def test_latent_from_args(latent, zd, spec):
    assert latent_from_args(latent, zd) == spec


def test_flags_map_onto_the_config(tmp_path):
    argv = "train --latent ps --zd 2 2 2 --hidden 64 32 --capacity 0 5 10 --burn-in 3"
    argv += " --look-ahead 0 --knn-labels --no-progress --kl-warmup 2"
    argv += " --grad-clip 5 --grad-clip-window 200"
    args = build_parser().parse_args(
        [*argv.split(), "--out", str(tmp_path), "--data-dir", str(tmp_path)]
    )
    config = config_from_args(args)
    assert config.latent == "ps:2,2,2"
    assert config.hidden == (64, 32)
    assert config.capacity == (0.0, 5.0, 10.0)
    assert (config.early_stopping_burn_in, config.look_ahead, config.kl_warmup) == (3, 0, 2.0)
    assert config.knn_labels == ()
    assert (config.grad_clip, config.grad_clip_window) == (5.0, 200)
    assert (config.out, config.data_dir, config.progress) == (str(tmp_path), str(tmp_path), False)
    assert config.epochs == 100  # unset flags keep TrainConfig's defaults


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--latent", "vmf"], "has no dimension"),
        (["--latent", "vmf:4", "--zd", "4"], "--zd needs a bare family"),
        (["--lr-decay", "2"], "lr_decay must be"),
        (["--grad-clip", "-1"], "grad_clip must be None"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_bad_values_exit_with_status_2(argv, message, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), *argv]) == 2
    assert message in capsys.readouterr().err


MNIST = default_data_root() / "MNIST" / "raw"


@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not available")
def test_end_to_end_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--hidden", "16", "--max-train-batches", "2", "--max-eval-points", "100"]
    tiny += ["--eval-batch-size", "50", "--ll-samples", "2", "--knn-labels", "20", "--no-progress"]
    command = [sys.executable, "-m", "pyro_svae", "train", "--dataset", "dynamic_mnist"]
    command += [
        "--latent",
        "vmf",
        "-zd",
        "2",
        "2",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYRO_SVAE_DATA": str(default_data_root())}
    done = subprocess.run(command + tiny, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    for word in (
        "LL",
        "ELBO",
        "RE",
        "KL",
        "k-NN",
        "summary.json",
        "KL per sphere factor  S^2 × S^2: ",
    ):
        assert word in done.stdout, word
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["latent"] == "vmf:2,2"
    assert summary["epochs_trained"] == 1

    # continue it in-process: unset flags come from the run, --epochs may grow
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert "test results" in capsys.readouterr().out
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]
    summary = json.loads(Path(out / "summary.json").read_text())
    assert summary["config"]["hidden"] == [16]
    assert summary["epochs_trained"] == 2


def _flows_built_by_the_trainer(argv: list[str], tmp_path: Path) -> tuple[TrainConfig, list]:
    """The config that ``argv`` gives and the flows of the model a trainer builds from it (toy data)."""
    args = build_parser().parse_args([*argv, "--out", str(tmp_path), "--no-progress"])
    config = config_from_args(args)
    images = (torch.rand(20, 16, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    data = BinaryImageData(images, None, image_shape=(1, 4, 4), name="toy")
    trainer = Trainer(config, datasets={"train": data, "valid": data, "test": data})
    try:
        return config, list(trainer.vae.flows.values())
    finally:
        trainer.close()


def test_mixture_components_reach_the_sphere_flow(tmp_path):
    """``--mixture-components K`` sets the number of Möbius dilations of every mobiusmix step."""
    argv = ["train", "--latent", "vmf:2", "--flow", "mobiusmix:2", "--mixture-components", "6"]
    config, flows = _flows_built_by_the_trainer(argv, tmp_path)
    assert config.mixture_components == 6
    assert [flow.components for flow in flows] == [6]
    assert all(p.shape[-1] == 3 + 2 * 6 for p in flows[0].params)  # axis + 6 scales + 6 logits
    with pytest.raises(SystemExit):  # the parser refuses it ...
        build_parser().parse_args([*argv[:-1], "0"])
    with pytest.raises(ValueError, match="mixture_components"):  # ... and so does the config
        TrainConfig(latent="vmf:2", flow="mobiusmix:1", mixture_components=0).validate()


def test_planar_min_det_reaches_every_planar_step(tmp_path):
    """``--planar-min-det`` bounds every planar step's determinant; the config and the model refuse
    values outside [0, 1) and a bound on a flow without planar steps."""
    argv = [
        "train",
        "--latent",
        "normal:2",
        "--flow",
        "radial:1+planar:2",
        "--planar-min-det",
        "0.1",
    ]
    config, flows = _flows_built_by_the_trainer(argv, tmp_path)
    assert config.planar_min_det == 0.1
    steps = list(flows[0].steps)
    assert [type(s).__name__ for s in steps] == ["Radial", "BoundedPlanar", "BoundedPlanar"]
    assert [s.min_det for s in steps[1:]] == [0.1, 0.1]
    for bad in (-0.5, 1.0, float("nan")):
        with pytest.raises(ValueError, match="planar_min_det must be a number in"):
            TrainConfig(latent="normal:2", flow="planar:1", planar_min_det=bad).validate()
    with pytest.raises(ValueError, match="planar_min_det must be 0 unless the flow has planar"):
        TrainConfig(latent="normal:2", flow="radial:1", planar_min_det=0.1).validate()
    with pytest.raises(
        ValueError, match=r"planar_min_det=0\.1 bounds planar steps, but there is no"
    ):
        FlowVAE("normal:2", 16, planar_min_det=0.1)


def test_kl_mode_and_gradient_reach_the_elbo(tmp_path):
    """``--kl`` and ``--kl-gradient`` reach the ELBO; the defaults are ``auto`` and ``total``."""
    argv = ["train", "--latent", "normal:2", "--flow", "planar:2", "--flow-type", "amortized"]
    images = (torch.rand(20, 16, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    data = BinaryImageData(images, None, image_shape=(1, 4, 4), name="toy")
    cases = (
        ([], "auto", "total"),
        (["--kl-gradient", "path"], "auto", "path"),
        (["--kl", "mc", "--kl-gradient", "path"], "mc", "path"),
    )
    for extra, kl, gradient in cases:
        args = build_parser().parse_args([*argv, *extra, "--out", str(tmp_path), "--no-progress"])
        config = config_from_args(args)
        assert (config.kl, config.kl_gradient) == (kl, gradient)
        trainer = Trainer(config, datasets={"train": data, "valid": data, "test": data})
        try:
            assert (trainer.elbo.kl_mode, trainer.elbo.kl_gradient) == (kl, gradient)
        finally:
            trainer.close()
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--kl-gradient", "score"])

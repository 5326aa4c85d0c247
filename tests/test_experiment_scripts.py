"""Smoke tests of the diagnostic scripts in ``benchmarks/results/experiments/flows_kl/``.

They are the scripts behind the measurements in ``docs/results.md`` (flows at d = 40 and the path
gradient). Here each one runs on a tiny amortized planar run (R^4, two planar steps, two training
minibatches), so that a change to the library that breaks them shows up in CI. No number is
checked against the documented ones: those need the full runs.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from pyro_svae.data import default_data_root
from pyro_svae.train import TrainConfig

from .scripts import run_script

SCRIPTS = (
    Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "experiments" / "flows_kl"
)
MNIST = default_data_root() / "MNIST" / "raw"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not available"),
]


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = run_script(SCRIPTS / script, *args, cwd=cwd, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def planar_run(tmp_path_factory) -> Path:
    """A tiny amortized planar run trained with the path gradient, made by ``rerun.py``."""
    root = tmp_path_factory.mktemp("flows_kl")
    config = TrainConfig(
        dataset="dynamic_mnist",
        latent="normal:4",
        hidden=(16,),
        flow="planar:2",
        flow_type="amortized",
        kl_gradient="path",
        epochs=1,
        max_train_batches=2,
        max_eval_points=100,
        eval_batch_size=50,
        ll_samples=0,
        knn_labels=(),
        threads=1,
        progress=False,
        out=str(root / "unused"),
    )
    (root / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    _run("rerun.py", str(root / "config.json"), f"out={root / 'run'}", cwd=root)
    run = root / "run"
    assert (run / "best.pt").is_file()
    assert (run / "checkpoint.pt").is_file()
    return run


def test_replay_with_clipping_logs_every_step_and_reports(planar_run, tmp_path):
    out = tmp_path / "replay"
    result = _run(
        "planar_jump_replay.py",
        str(planar_run / "checkpoint.pt"),
        str(out),
        "--epochs",
        "1",
        "--grad-clip",
        "5",
        cwd=tmp_path,
    )
    assert "epoch 2: train loss" in result.stdout
    with (out / "steps.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [2, 2]  # two minibatches per epoch
    assert all(row["clipped"] == "0" for row in rows)  # the 500-step history is not full yet
    assert all(float(row["grad_norm"]) > 0 and float(row["max_stretch"]) >= 1 for row in rows)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["grad_clip"] == 5.0
    report = _run("planar_jump_replay.py", "--report", str(out / "steps.csv"), cwd=tmp_path)
    assert "2 steps, epochs 2-2" in report.stdout
    assert "clipped steps: 0" in report.stdout


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("planar_conditioning.py", ("--draws", "1"), "stretch"),
        ("planar_tail.py", ("--draws", "2"), "draw"),
        ("gradient_variance.py", ("--draws", "2"), "base path"),
        ("active_units.py", (), "active directions"),
    ],
)
def test_diagnostics_run_on_a_planar_checkpoint(planar_run, tmp_path, script, args, expected):
    result = _run(script, str(planar_run / "best.pt"), *args, cwd=tmp_path)
    assert expected in result.stdout

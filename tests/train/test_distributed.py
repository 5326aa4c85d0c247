"""Data-parallel training with ``torch.distributed``: 2 CPU processes (gloo) launched by ``torchrun``.

One ``torchrun`` launch runs :func:`_worker` (this file as a script) in two processes; it trains
several tiny runs, provokes two errors and runs the command line on MNIST, and leaves, per rank,
its final parameters, the files it wrote, the errors and the command line's output. The tests
compare them with single-process runs made here.

Exact comparison needs the same random numbers for every data point however a batch is split. The
data (order, dynamic binarisation) are drawn for the whole global batch on every rank, so they are;
the latent samples are not (each rank draws its own), so the comparison runs use a deterministic
guide: vMF sampling replaced by the posterior mode (:func:`_mode`). The stochastic runs check that
the ranks stay identical and that ``resume`` continues a distributed run bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock  # a dependency of torch

from pyro_svae.cli import build_parser, config_from_args, main
from pyro_svae.data import BinaryImageData, default_data_root
from pyro_svae.distributions import VonMisesFisher
from pyro_svae.train import TrainConfig, Trainer, load_checkpoint, train
from pyro_svae.train.distributed import TORCHRUN_VARIABLES

WORLD = 2
MNIST = default_data_root() / "MNIST" / "raw"
#: a smoke run of the command line on MNIST (no --distributed: torchrun implies it)
CLI_ARGS = [
    "train",
    "--dataset",
    "dynamic_mnist",
    "--latent",
    "vmf:2,2",
    "--hidden",
    "16",
    "--epochs",
    "1",
    "--batch-size",
    "20",
    "--max-train-batches",
    "2",
    "--max-eval-points",
    "60",
    "--eval-batch-size",
    "30",
    "--ll-samples",
    "2",
    "--knn-labels",
    "20",
    "--threads",
    "1",
    "--no-progress",
]


def _mode(self, sample_shape=torch.Size()):
    """Deterministic stand-in for ``VonMisesFisher.rsample``: the mode ``loc``."""
    return self.loc.expand(self._extended_shape(sample_shape))


def toy_splits(n_train: int) -> dict[str, BinaryImageData]:
    """Float64 dynamically binarised 6x6 images around 4 prototypes, with labels."""
    prototypes = torch.rand(4, 36, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def split(n: int, seed: int, name: str) -> BinaryImageData:
        labels = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed))
        return BinaryImageData(
            prototypes[labels],
            labels,
            dynamic=True,
            image_shape=(1, 6, 6),
            name="toy",
            split=name,
            num_classes=4,
        )

    # valid: 41 points in batches of 10, so the last batch leaves rank 1 without a point
    return {
        "train": split(n_train, 0, "train"),
        "valid": split(41, 1, "valid"),
        "test": split(23, 2, "test"),
    }


#: run name -> (training points, epochs, deterministic guide). 99 points in batches of 16: the
#: last batch of 3 is split 2 / 1 (unequal weights); 97 points: the last batch of 1 is split 1 / 0.
RUNS = {
    "mode": (99, 2, True),
    "mode_empty_slice": (97, 1, True),
    "noisy": (99, 2, False),
}
#: runs trained without gradient clipping (the others clip), so that both paths are compared
UNCLIPPED = {"mode_empty_slice"}


def run_config(
    out: Path, n_train: int, epochs: int, *, clip: bool = True, **changes
) -> TrainConfig:
    """The tiny run: ``n_train`` only names the data it is meant for. With ``clip``, the gradient
    norm is clipped at the median of the last 3 steps' norms, which clips some steps, after the
    gradients' all-reduce: the distributed runs must clip exactly as the single-process ones."""
    settings = {
        "dataset": "static_mnist",  # a label: the data are passed in
        "latent": "vmf:2,2",
        "hidden": (12,),
        "epochs": epochs,
        "batch_size": 16,
        "lr": 1e-2,
        "kl_warmup": 1.0,
        "eval_batch_size": 10,
        "ll_samples": 2,
        "knn_labels": (10,),
        "snapshot_every": 2,
        "grad_clip": 1.0 if clip else None,
        "grad_clip_window": 3,
        "threads": 1,
        "progress": False,
        "out": str(out),
    }
    return TrainConfig(**{**settings, **changes})


# ------------------------------------------------------------------------------------------------
# the worker (run by torchrun)
# ------------------------------------------------------------------------------------------------


def _worker(root: Path) -> None:
    import pyro
    import torch.distributed as dist

    import pyro_svae.train.checkpoint as checkpoint_module
    import pyro_svae.train.summary as summary_module
    from pyro_svae.train import distributed

    torch.set_default_dtype(torch.float64)
    pyro.enable_validation(True)
    context = distributed.setup("cpu")  # the trainers join this group and leave it open
    rank = dist.get_rank()
    writes: list[str] = []
    original_write = checkpoint_module.atomic_write

    def recording_write(path, write):
        writes.append(os.fspath(path))
        return original_write(path, write)

    checkpoint_module.atomic_write = recording_write
    summary_module.atomic_write = recording_write
    original_rsample = VonMisesFisher.rsample

    def run(name: str, config: TrainConfig, datasets, mode: bool) -> None:
        VonMisesFisher.rsample = _mode if mode else original_rsample
        trainer = Trainer(config, datasets=datasets)
        try:
            trainer.run()
        finally:
            trainer.close()
        state = {k: v.clone() for k, v in trainer.vae.state_dict().items()}
        torch.save(state, root / f"params-{name}-rank{rank}.pt")

    for name, (n_train, epochs, mode) in RUNS.items():
        config = run_config(
            root / name, n_train, epochs, distributed=True, clip=name not in UNCLIPPED
        )
        run(name, config, toy_splits(n_train), mode)
    # the stochastic run again, interrupted after one epoch and resumed
    data = toy_splits(RUNS["noisy"][0])
    run("resumed", run_config(root / "resumed", 99, 1, distributed=True), data, False)
    config = run_config(root / "resumed", 99, 2, distributed=True, resume=True)
    run("resumed", config, data, False)

    errors = []
    for config in (
        run_config(root / "odd", 99, 1, distributed=True, batch_size=15),
        run_config(root / "mode", 99, 2, distributed=True),  # holds a run: refused on rank 0
    ):
        try:
            Trainer(config, datasets=data).close()
        except (ValueError, FileExistsError) as err:
            errors.append(f"{type(err).__name__}: {err}")
    # the command line, as 'torchrun -m pyro_svae train ...' runs it (distributed implied)
    stdout, status = io.StringIO(), None
    if MNIST.is_dir():
        torch.set_default_dtype(torch.float32)
        VonMisesFisher.rsample = original_rsample
        with contextlib.redirect_stdout(stdout):
            status = main([*CLI_ARGS, "--out", str(root / "cli")])
    record = {"writes": writes, "errors": errors, "cli": [status, stdout.getvalue()]}
    (root / f"rank{rank}.json").write_text(json.dumps(record))
    distributed.teardown(context)


# ------------------------------------------------------------------------------------------------
# the tests
# ------------------------------------------------------------------------------------------------


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(WORLD), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def _launch(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    done = _torchrun(__file__, "--worker", str(root))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    (root / "done").touch()


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory) -> Path:
    """The folder of the torchrun launch, made once per test session (also with pytest-xdist,
    whose workers share the session's temporary folder)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        root = tmp_path_factory.mktemp("distributed")
        _launch(root)
        return root
    root = tmp_path_factory.getbasetemp().parent / "distributed"
    with FileLock(f"{root}.lock"):
        if not (root / "done").is_file():
            _launch(root)
    return root


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory) -> Path:
    """The deterministic runs in this one process (float64, vMF mode)."""
    root = tmp_path_factory.mktemp("single")
    original_rsample, dtype = VonMisesFisher.rsample, torch.get_default_dtype()
    VonMisesFisher.rsample = _mode
    torch.set_default_dtype(torch.float64)
    try:
        for name, (n_train, epochs, mode) in RUNS.items():
            if mode:
                config = run_config(root / name, n_train, epochs, clip=name not in UNCLIPPED)
                train(config, datasets=toy_splits(n_train))
    finally:
        VonMisesFisher.rsample = original_rsample
        torch.set_default_dtype(dtype)
    return root


def _close(a, b, what: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            _close(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape, what
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10), (
            f"{what}: max diff {(a - b).abs().max()}"
        )
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (
            math.isnan(a) and math.isnan(b)
        ), f"{what}: {a} != {b}"
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, (_, _, mode) in RUNS.items() if mode])
def test_two_processes_match_one(distributed_runs, single_runs, name):
    """Parameters, Adam state, loss curves and metrics of 2 processes = 1 process."""
    two = load_checkpoint(distributed_runs / name / "checkpoint.pt")
    one = load_checkpoint(single_runs / name / "checkpoint.pt")
    assert two["elbo_step"] == one["elbo_step"] > 0
    _close(two["model"], one["model"], "parameters")
    for param in one["optim"]:
        _close(two["optim"][param]["state"], one["optim"][param]["state"], f"Adam {param}")
    assert len(two["history"]) == len(one["history"]) == RUNS[name][1]
    if name in UNCLIPPED:
        assert all("clipped_steps" not in row for row in one["history"])
    else:
        assert sum(row["clipped_steps"] for row in one["history"]) > 0
    for row_two, row_one in zip(two["history"], one["history"], strict=True):
        _close(
            {k: v for k, v in row_two.items() if "seconds" not in k},
            {k: v for k, v in row_one.items() if "seconds" not in k},
            "metrics",
        )
    s_two = json.loads((distributed_runs / name / "summary.json").read_text())
    s_one = json.loads((single_runs / name / "summary.json").read_text())
    _close(s_two["test"], s_one["test"], "test metrics")
    assert s_two["knn"] == s_one["knn"]
    assert s_two["best_epoch"] == s_one["best_epoch"]
    assert s_two["distributed"] == {"world_size": WORLD, "backend": "gloo"}
    assert s_one["distributed"] is None
    assert s_two["config"]["distributed"] is True


@pytest.mark.slow
@pytest.mark.parametrize("name", [*RUNS, "resumed"])
def test_ranks_hold_the_same_parameters(distributed_runs, name):
    a = torch.load(distributed_runs / f"params-{name}-rank0.pt", weights_only=True)
    b = torch.load(distributed_runs / f"params-{name}-rank1.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_resume_continues_a_distributed_run_exactly(distributed_runs):
    straight = load_checkpoint(distributed_runs / "noisy" / "checkpoint.pt")
    resumed = load_checkpoint(distributed_runs / "resumed" / "checkpoint.pt")
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
    strip = [{k: v for k, v in row.items() if "seconds" not in k} for row in straight["history"]]
    assert strip == [
        {k: v for k, v in row.items() if "seconds" not in k} for row in resumed["history"]
    ]
    assert straight["elbo_step"] == resumed["elbo_step"]


@pytest.mark.slow
def test_only_rank_0_writes(distributed_runs):
    rank0 = json.loads((distributed_runs / "rank0.json").read_text())
    rank1 = json.loads((distributed_runs / "rank1.json").read_text())
    assert rank1["writes"] == []
    written = {Path(path).name for path in rank0["writes"]}
    assert {"checkpoint.pt", "best.pt", "metrics.jsonl", "metrics.csv", "summary.json"} <= written
    assert {"config.json"} <= written
    rows = (distributed_runs / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]


@pytest.mark.slow
def test_errors_reach_every_rank(distributed_runs):
    for rank in range(WORLD):
        errors = json.loads((distributed_runs / f"rank{rank}.json").read_text())["errors"]
        assert len(errors) == 2, errors
        assert errors[0].startswith("ValueError")
        assert "multiple of 2" in errors[0]
        assert errors[1].startswith("FileExistsError")
        assert "already holds a run" in errors[1]


# -- command line --------------------------------------------------------------------------------


def test_distributed_flag_without_torchrun_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "--distributed", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "torchrun" in err
    assert "RANK" in err
    assert not (tmp_path / "run").exists()


def test_torchrun_implies_distributed(tmp_path, monkeypatch):
    args = build_parser().parse_args(["train", "--out", str(tmp_path)])
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert config_from_args(args).distributed is False
    for name, value in zip(TORCHRUN_VARIABLES, ("0", "2", "0", "127.0.0.1", "29500"), strict=True):
        monkeypatch.setenv(name, value)
    assert config_from_args(args).distributed is True


def test_distributed_is_a_bool():
    with pytest.raises(ValueError, match="distributed"):
        TrainConfig(distributed="yes")


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not available")
def test_command_line_under_torchrun(distributed_runs):
    """``pyro_svae.cli.main`` in torchrun's processes (as ``torchrun -m pyro_svae train`` runs it)."""
    (status0, out0), (status1, out1) = (
        json.loads((distributed_runs / f"rank{rank}.json").read_text())["cli"] for rank in (0, 1)
    )
    assert status0 == status1 == 0
    assert "test results" in out0
    assert out1 == ""  # rank 0 reports
    summary = json.loads((distributed_runs / "cli" / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": WORLD, "backend": "gloo"}
    assert summary["config"]["distributed"] is True
    assert summary["steps"] == 2


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]))

"""The training loop: outputs, bit-for-bit resume, NaN recovery, early stopping, interruption."""

from __future__ import annotations

import csv
import json
import math
import os
import signal

import pytest
import torch

from pyro_svae.train import (
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    load_checkpoint,
    train,
)
from pyro_svae.train.evaluation import unused_sphere_factors

from .conftest import STEPS_PER_EPOCH, tiny_config

#: with KL warm-up and capacity, so that the restored step counter matters
SCHEDULED = {"kl_warmup": 1.5, "capacity": (0.0, 2.0, 2.0)}


def _assert_same_tensors(a, b, what):
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def _assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same training state, bit for bit."""
    _assert_same_tensors(a["model"], b["model"], "parameters")
    _assert_same_tensors(a["best"]["params"], b["best"]["params"], "best parameters")
    assert a["optim"].keys() == b["optim"].keys()
    for name in a["optim"]:
        sa, sb = a["optim"][name]["state"][0], b["optim"][name]["state"][0]
        _assert_same_tensors(sa, sb, f"Adam state of {name}")
    assert a["elbo_step"] == b["elbo_step"]
    assert a["epoch"] == b["epoch"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])

    def strip(history):
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]

    assert strip(a["history"]) == strip(b["history"])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, toy_data):
    """Two epochs in one go: the reference for the resume tests."""
    out = tmp_path_factory.mktemp("straight")
    summary = train(tiny_config(out, **SCHEDULED), datasets=toy_data)
    return out, summary


def test_smoke_run_writes_every_file(straight_run):
    out, summary = straight_run
    for name in (
        "checkpoint.pt",
        "best.pt",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "config.json",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == summary["best_epoch"]
    assert {
        "config",
        "best_epoch",
        "best_val_elbo",
        "test",
        "knn",
        "wall_time_s",
        "environment",
        "files",
    } <= summary.keys()
    assert set(summary["test"]) == {"ll", "elbo", "reconstruction", "kl", "ll_samples"}
    assert all(math.isfinite(summary["test"][k]) for k in ("ll", "elbo", "reconstruction", "kl"))
    assert summary["knn"].keys() == {
        "10",
        "120",
    }  # 1000 labelled points capped at the 120 available
    assert {"torch", "pyro", "device"} <= summary["environment"].keys()
    # the test KL split over the two S^2 factors of vmf:2,2
    (entry,) = summary["kl_per_factor"]
    assert entry["group"] == "S^2 × S^2"
    assert len(entry["kl"]) == 2
    assert sum(entry["kl"]) == pytest.approx(summary["test"]["kl"], rel=1e-4, abs=1e-4)
    assert summary["unused_sphere_factors"] == unused_sphere_factors(summary["kl_per_factor"])
    assert summary["steps"] == 2 * STEPS_PER_EPOCH
    assert summary["epochs_trained"] == 2

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    expected = {
        "epoch",
        "step",
        "train_loss",
        "train_reconstruction",
        "train_kl",
        "val_elbo",
        "lr",
        "seconds",
        "kl_weight",
        "capacity",
    }
    assert expected <= rows[0].keys()
    assert rows[0]["kl_weight"] == pytest.approx(STEPS_PER_EPOCH / (1.5 * STEPS_PER_EPOCH))
    with (out / "metrics.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2]

    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert {
        "model",
        "optim",
        "elbo_step",
        "epoch",
        "rng",
        "best",
        "history",
        "lr",
        "config",
    } <= checkpoint.keys()
    assert TrainConfig.from_dict(checkpoint["config"]) == tiny_config(out, **SCHEDULED)
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == summary["best_epoch"]


def test_resume_after_one_epoch_is_bit_for_bit(straight_run, toy_data, tmp_path):
    reference, summary = straight_run
    train(tiny_config(tmp_path, **SCHEDULED, epochs=1), datasets=toy_data)
    resumed = train(tiny_config(tmp_path, **SCHEDULED, resume=True), datasets=toy_data)
    _assert_same_state(
        load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(tmp_path / "checkpoint.pt")
    )
    _assert_same_tensors(
        load_checkpoint(reference / "best.pt")["model"],
        load_checkpoint(tmp_path / "best.pt")["model"],
        "best.pt",
    )
    assert resumed["test"] == summary["test"]
    assert resumed["knn"] == summary["knn"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_interrupt_mid_epoch_keeps_the_checkpoint_and_resumes_exactly(
    straight_run, toy_data, tmp_path, capsys
):
    reference, _ = straight_run
    trainer = Trainer(tiny_config(tmp_path, **SCHEDULED), datasets=toy_data)
    step = trainer.svi.step

    def interrupted_step(*args, **kwargs):
        if trainer.elbo.step == STEPS_PER_EPOCH + 3:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    trainer.svi.step = interrupted_step
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert "--resume" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    train(tiny_config(tmp_path, **SCHEDULED, resume=True), datasets=toy_data)
    _assert_same_state(
        load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(tmp_path / "checkpoint.pt")
    )


def test_sigterm_stops_like_an_interrupt_and_resumes_exactly(
    straight_run, toy_data, tmp_path, capsys
):
    reference, _ = straight_run
    trainer = Trainer(tiny_config(tmp_path, **SCHEDULED), datasets=toy_data)
    step = trainer.svi.step
    handler_before = signal.getsignal(signal.SIGTERM)

    def terminated_step(*args, **kwargs):
        if trainer.elbo.step == STEPS_PER_EPOCH + 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as sent by kill, a job scheduler or torchrun
        return step(*args, **kwargs)

    trainer.svi.step = terminated_step
    with pytest.raises(KeyboardInterrupt, match="signal"):
        trainer.run()
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert "--resume" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    train(tiny_config(tmp_path, **SCHEDULED, resume=True), datasets=toy_data)
    _assert_same_state(
        load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(tmp_path / "checkpoint.pt")
    )


def test_resume_refuses_a_config_that_changes_training(straight_run, toy_data):
    reference, _ = straight_run
    with pytest.raises(ValueError, match=r"cannot resume .*lr: 0.001 in the run, 0.01 now"):
        Trainer(tiny_config(reference, **SCHEDULED, resume=True, lr=1e-2), datasets=toy_data).run()


def test_existing_run_is_not_overwritten_by_accident(straight_run, toy_data, tmp_path):
    reference, _ = straight_run
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_config(reference, **SCHEDULED), datasets=toy_data).run()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(tiny_config(tmp_path, resume=True), datasets=toy_data).run()


def test_resume_of_a_finished_run_only_evaluates(straight_run, toy_data):
    reference, summary = straight_run
    again = train(tiny_config(reference, **SCHEDULED, resume=True), datasets=toy_data)
    assert again["epochs_trained"] == 2
    assert again["test"] == summary["test"]


# ----------------------------------------------------------------------------------------------
# non-finite losses
# ----------------------------------------------------------------------------------------------


def _inject(trainer, should_fail, kind="loss"):
    """Make ``trainer``'s SVI steps non-finite whenever ``should_fail(step)`` (after the step count)."""
    loss_and_grads = trainer.svi.loss_and_grads

    def faulty(model, guide, *args, **kwargs):
        loss = loss_and_grads(model, guide, *args, **kwargs)
        if should_fail(trainer.elbo.step):
            next(trainer.vae.parameters()).grad.fill_(float("nan"))
            if kind == "loss":
                return float("nan")
        return loss

    trainer.svi.loss_and_grads = faulty


ignore_nan_warning = pytest.mark.filterwarnings("ignore:Encountered NaN")


@ignore_nan_warning
@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_transient_nan_is_recovered_from(toy_data, tmp_path, kind):
    config = tiny_config(tmp_path, lr_decay=0.5)
    trainer = Trainer(config, datasets=toy_data)
    fired = []

    def once_at_step_5(step):
        if step == 5 and not fired:
            fired.append(step)
            return True
        return False

    _inject(trainer, once_at_step_5, kind)
    summary = trainer.run()
    assert fired == [5]
    assert summary["nan_recoveries"] == 1
    assert summary["final_lr"] == config.lr * 0.5
    # snapshot at step 4 (snapshot_every=2): the failed step is retried, nothing else is lost
    assert summary["steps"] == 2 * STEPS_PER_EPOCH
    rows = trainer.history
    assert [row["nan_recoveries"] for row in rows] == [1, 0]
    assert all(torch.isfinite(p).all() for p in trainer.vae.parameters())
    assert math.isfinite(summary["test"]["elbo"])


@ignore_nan_warning
def test_nan_in_a_distribution_parameter_is_recovered_from(toy_data, tmp_path):
    """With validation on, a NaN reaching a distribution raises ValueError: also recovered."""
    trainer = Trainer(tiny_config(tmp_path, epochs=1), datasets=toy_data)
    encoder = trainer.vae.encoder
    forward, calls = encoder.forward, []

    def nan_once(x):
        calls.append(1)
        h = forward(x)
        return h * float("nan") if len(calls) == 3 else h

    encoder.forward = nan_once
    summary = trainer.run()
    assert summary["nan_recoveries"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.vae.parameters())


@ignore_nan_warning
def test_persistent_nan_stops_with_a_clear_error(toy_data, tmp_path):
    config = tiny_config(tmp_path, epochs=3, max_retries=2)
    trainer = Trainer(config, datasets=toy_data)
    _inject(trainer, lambda step: step >= STEPS_PER_EPOCH + 3)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.run()
    message = str(info.value)
    assert f"epoch 2, step {STEPS_PER_EPOCH + 3}" in message
    assert "learning rate 0.00025" in message
    assert "after 2 retries" in message
    assert "checkpoint.pt, end of epoch 1) is intact" in message
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


# ----------------------------------------------------------------------------------------------
# early stopping
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("burn_in", "stop_epoch"), [(0, 3), (2, 4)])
def test_early_stopping_keeps_the_best_model(toy_data, tmp_path, monkeypatch, burn_in, stop_epoch):
    import pyro_svae.train.loop as loop

    score, val_elbos = loop.score, iter([-10.0, -11.0, -12.0, -13.0, -14.0, -15.0])

    def worsening(vae, data, *, ll_samples=0, **kwargs):
        if ll_samples == 0:  # validation
            return {"ll": float("nan"), "elbo": next(val_elbos), "reconstruction": 0.0, "kl": 0.0}
        return score(vae, data, ll_samples=ll_samples, **kwargs)

    monkeypatch.setattr(loop, "score", worsening)
    config = tiny_config(tmp_path, epochs=6, look_ahead=2, early_stopping_burn_in=burn_in)
    trainer = Trainer(config, datasets=toy_data)
    summary = trainer.run()
    assert summary["stopped_early"]
    assert summary["epochs_trained"] == stop_epoch
    assert summary["best_epoch"] == 1
    assert summary["best_val_elbo"] == -10.0
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 1
    _assert_same_tensors(best["model"], trainer.vae.state_dict(), "restored best model")
    latest = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert any(not torch.equal(latest[k], best["model"][k]) for k in latest)

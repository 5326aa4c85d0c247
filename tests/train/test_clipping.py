"""GradientNormClip: the norm it records, when and how far it clips, its state; its use in training."""

from __future__ import annotations

import csv

import pyro
import pytest
import torch

from pyro_svae.train import Trainer, load_checkpoint, train
from pyro_svae.train.clipping import GradientNormClip
from pyro_svae.train.optim import FusedAdam

from .conftest import STEPS_PER_EPOCH, tiny_config


def _grads(norm: float) -> list[torch.Tensor]:
    """Two gradient tensors whose global L2 norm is ``norm`` (3-4-5 triangle, scaled)."""
    return [torch.tensor([3.0 * norm / 5.0]), torch.tensor([[4.0 * norm / 5.0, 0.0]])]


def _global_norm(grads: list[torch.Tensor]) -> float:
    return float(torch.cat([g.reshape(-1) for g in grads]).norm())


def test_records_the_global_norm_without_changing_anything_when_not_clipping():
    clip = GradientNormClip(factor=None, window=2)
    for norm in (10.0, 1.0, 1000.0):
        grads = _grads(norm)
        measured = clip(grads)
        assert float(measured) == pytest.approx(norm, rel=1e-6)
        assert _global_norm(grads) == pytest.approx(norm, rel=1e-6)  # untouched
    assert clip.threshold() is None
    stats = clip.epoch_stats()
    assert stats == {
        "grad_norm_median": pytest.approx(10.0),
        "grad_norm_max": pytest.approx(1000.0),
    }
    assert clip.epoch_stats() == {}  # reset after each epoch


def test_clips_an_outlier_to_factor_times_the_median_of_the_previous_window():
    clip = GradientNormClip(factor=3.0, window=3)
    for norm in (2.0, 4.0, 100.0):  # window not full yet: the 100 passes unclipped
        grads = _grads(norm)
        clip(grads)
        assert _global_norm(grads) == pytest.approx(norm, rel=1e-6)
    # previous three: 2, 4, 100 -> median 4, threshold 12
    assert float(clip.threshold()) == pytest.approx(12.0)
    grads = _grads(50.0)
    assert float(clip(grads)) == pytest.approx(50.0)  # the norm before clipping is returned
    assert _global_norm(grads) == pytest.approx(12.0, rel=1e-6)
    # the direction is kept
    assert float(grads[0]) / float(grads[1][0, 0]) == pytest.approx(3.0 / 4.0)
    # the raw norm enters the history: 4, 100, 50 -> threshold 3 * 50
    assert float(clip.threshold()) == pytest.approx(150.0)
    grads = _grads(11.0)  # below the threshold: untouched
    clip(grads)
    assert _global_norm(grads) == pytest.approx(11.0, rel=1e-6)
    stats = clip.epoch_stats()
    assert stats["clipped_steps"] == 1
    assert stats["grad_norm_max"] == pytest.approx(100.0)
    assert clip.steps_seen == 5


def test_state_round_trip_continues_exactly():
    norms = [5.0, 1.0, 7.0, 30.0, 2.0, 40.0, 3.0, 90.0]
    straight = GradientNormClip(factor=2.0, window=3)
    out_straight = []
    for norm in norms:
        grads = _grads(norm)
        straight(grads)
        out_straight.append(_global_norm(grads))
    first = GradientNormClip(factor=2.0, window=3)
    out_resumed = []
    for norm in norms[:4]:
        grads = _grads(norm)
        first(grads)
        out_resumed.append(_global_norm(grads))
    second = GradientNormClip(factor=2.0, window=3)
    second.load_state_dict(first.state_dict())
    for norm in norms[4:]:
        grads = _grads(norm)
        second(grads)
        out_resumed.append(_global_norm(grads))
    assert out_resumed == out_straight
    assert second.epoch_stats() == straight.epoch_stats()
    with pytest.raises(ValueError, match="window of 3 steps"):
        GradientNormClip(2.0, window=4).load_state_dict(first.state_dict())


def test_mixed_dtypes_and_a_zero_threshold():
    clip = GradientNormClip(factor=2.0, window=2)
    grads = [torch.tensor([3.0]), torch.tensor([4.0], dtype=torch.float64)]
    assert float(clip(grads)) == pytest.approx(5.0)
    zero = [torch.zeros(1), torch.zeros(1, dtype=torch.float64)]
    clip(zero)
    clip([torch.zeros(1), torch.zeros(1, dtype=torch.float64)])  # history now 0, 0
    grads = [torch.tensor([30.0]), torch.tensor([40.0], dtype=torch.float64)]
    clip(grads)  # a zero threshold clips nothing (it would zero every gradient)
    assert [float(g) for g in grads] == [30.0, 40.0]
    clip(grads)  # history 0, 50 -> lower median 0: still nothing
    clip([torch.tensor([0.3]), torch.tensor([0.4], dtype=torch.float64)])
    grads = [torch.tensor([300.0]), torch.tensor([400.0], dtype=torch.float64)]
    clip(grads)  # history 50, 0.5 -> threshold 2 * 0.5 = 1
    assert _global_norm([g.double() for g in grads]) == pytest.approx(1.0, rel=1e-6)
    assert grads[1].dtype == torch.float64
    assert clip.epoch_stats()["clipped_steps"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 0.0}, "factor must be None or a finite number > 0"),
        ({"factor": float("inf")}, "factor must be"),
        ({"factor": 2.0, "window": 0}, "window must be a positive integer"),
        ({"factor": 2.0, "window": 2.5}, "window must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradientNormClip(**kwargs)


def test_fused_adam_steps_with_the_clipped_gradient():
    """FusedAdam + clip takes exactly the Adam step of the clipped gradient."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3))
    b = torch.nn.Parameter(a.detach().clone())
    reference = torch.optim.Adam([b], lr=0.1)
    pyro.clear_param_store()
    pyro.param("a", a)
    fused = FusedAdam({"lr": 0.1}, clip=GradientNormClip(factor=1.5, window=2))
    history = []
    for norm in (1.0, 2.0, 30.0, 1.0):
        g = torch.randn(3)
        g = g * norm / g.norm()
        a.grad = g.clone()
        fused([a])
        history.append(norm)
        previous = history[-3:-1]
        scale = 1.0
        if len(history) > 2 and norm > 1.5 * min(previous):  # torch.median: the lower middle value
            scale = 1.5 * min(previous) / norm
        b.grad = g * scale
        reference.step()
        assert torch.allclose(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    assert fused.clip.epoch_stats()["clipped_steps"] == 1
    pyro.clear_param_store()


def test_training_logs_the_norm_and_clipped_steps(toy_data, tmp_path):
    summary = train(tiny_config(tmp_path, grad_clip=1.0, grad_clip_window=3), datasets=toy_data)
    assert summary["config"]["grad_clip"] == 1.0
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert float(row["grad_norm_max"]) >= float(row["grad_norm_median"]) > 0
    clipped = [int(row["clipped_steps"]) for row in rows]
    # the first 3 steps fill the window; with factor 1 about half of the others clip
    assert 0 < sum(clipped) < 2 * STEPS_PER_EPOCH - 3
    state = load_checkpoint(tmp_path / "checkpoint.pt")["grad_clip"]
    assert state["seen"] == 2 * STEPS_PER_EPOCH


def test_measuring_the_norm_leaves_adam_bit_for_bit():
    """FusedAdam measuring the norm (the trainer's default) takes exactly the steps it takes alone."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4))
    b = torch.nn.Parameter(a.detach().clone())
    pyro.param("a", a)
    pyro.param("b", b)
    alone = FusedAdam({"lr": 0.1})
    measuring = FusedAdam({"lr": 0.1}, clip=GradientNormClip())
    for _ in range(5):
        g = torch.randn(4)
        a.grad, b.grad = g.clone(), g.clone()
        alone([a])
        measuring([b])
        assert torch.equal(a.detach(), b.detach())
    assert len(measuring.clip.epoch_stats()) == 2  # median and max, no clipped_steps
    pyro.clear_param_store()


def test_without_clipping_the_norms_are_logged_and_training_is_unchanged(toy_data, tmp_path):
    """A run without clipping logs the norms; a factor no step reaches trains exactly as it."""
    plain = train(tiny_config(tmp_path / "plain"), datasets=toy_data)
    lax = train(tiny_config(tmp_path / "lax", grad_clip=1e6, grad_clip_window=2), datasets=toy_data)
    assert plain["test"] == lax["test"]
    rows = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["history"]
    assert all("clipped_steps" not in row and row["grad_norm_median"] > 0 for row in rows)
    lax_rows = load_checkpoint(tmp_path / "lax" / "checkpoint.pt")["history"]
    assert [row["clipped_steps"] for row in lax_rows] == [0, 0]
    assert [row["grad_norm_max"] for row in lax_rows] == [row["grad_norm_max"] for row in rows]


def test_resume_with_clipping_is_bit_for_bit(toy_data, tmp_path):
    settings = {"grad_clip": 1.0, "grad_clip_window": 4}
    straight = train(tiny_config(tmp_path / "straight", **settings), datasets=toy_data)
    train(tiny_config(tmp_path / "resumed", epochs=1, **settings), datasets=toy_data)
    resumed = train(tiny_config(tmp_path / "resumed", resume=True, **settings), datasets=toy_data)
    assert resumed["test"] == straight["test"]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["grad_clip"]["history"], b["grad_clip"]["history"])
    strip = [{k: v for k, v in r.items() if "seconds" not in k} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if "seconds" not in k} for r in b["history"]]


def test_a_checkpoint_from_before_the_norm_was_tracked_resumes(toy_data, tmp_path):
    """Checkpoints written before this feature have no ``grad_clip`` entry: the history restarts."""
    train(tiny_config(tmp_path, epochs=1), datasets=toy_data)
    path = tmp_path / "checkpoint.pt"
    state = load_checkpoint(path)
    del state["grad_clip"]
    torch.save(state, path)
    trainer = Trainer(tiny_config(tmp_path, resume=True), datasets=toy_data)
    summary = trainer.run()
    assert summary["epochs_trained"] == 2
    assert trainer.clip.steps_seen == STEPS_PER_EPOCH  # only the steps taken after the resume
    assert trainer.history[-1]["grad_norm_median"] > 0


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_recovery_from_a_non_finite_step_rolls_the_norm_history_back(toy_data, tmp_path):
    trainer = Trainer(tiny_config(tmp_path, grad_clip=2.0, grad_clip_window=3), datasets=toy_data)
    loss_and_grads, fired = trainer.svi.loss_and_grads, []

    def nan_once_at_step_6(model, guide, *args, **kwargs):
        loss = loss_and_grads(model, guide, *args, **kwargs)
        if trainer.elbo.step == 6 and not fired:
            fired.append(1)
            next(trainer.vae.parameters()).grad.fill_(float("nan"))
        return loss

    trainer.svi.loss_and_grads = nan_once_at_step_6
    summary = trainer.run()
    assert fired
    assert summary["nan_recoveries"] == 1
    # step 6 fails: the snapshot of step 4 is restored, with the norm history of its 4 steps, and
    # the loop retries batch 6 (step 5's update is rolled back, not redone): the history counts
    # exactly the steps that were kept
    assert summary["steps"] == 2 * STEPS_PER_EPOCH - 1
    assert trainer.clip.steps_seen == summary["steps"]

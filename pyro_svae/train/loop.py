"""The training loop: SVI with Adam, validation, early stopping, checkpoints, resume and NaN recovery.

A run is deterministic given its :class:`TrainConfig`: Pyro's seed sets torch's, Python's and
NumPy's generators, and a separate :class:`torch.Generator` orders the minibatches and draws the
dynamic binarisation. After every epoch the whole state (parameters, Adam moments, ELBO step
counter, generator states, best parameters, history, early-stopping counters, learning rate) is
written atomically to ``checkpoint.pt``, so ``resume=True`` continues an interrupted run to the same
result, bit for bit on the same machine. While :meth:`Trainer.run` trains, ``SIGTERM`` (``kill``, job
schedulers, ``torchrun``) ends the run as Ctrl-C does: the last completed epoch's checkpoint is kept and
the same command with ``--resume`` continues it.

Training uses Pyro's global parameter store, which :class:`Trainer` clears when it is created.

With ``config.distributed`` every process of a ``torchrun`` launch runs a :class:`Trainer`: each
trains on its slice of every global batch, the gradients are summed over the processes before the
optimizer step, evaluation is split between them, and rank 0 alone writes the run's files (see
:mod:`pyro_svae.train.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.optim
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyro_svae.data import ImageData, load_splits
from pyro_svae.infer import AnnealedELBO, CapacitySchedule
from pyro_svae.models import VAE, FlowVAE

from .checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    write_json,
)
from .clipping import GradientNormClip
from .config import TrainConfig, resume_conflicts
from .device import resolve_device
from .distributed import (
    TEST_STREAM,
    TRAIN_STREAM,
    DistContext,
    DistributedSVI,
    setup,
    sharded_score,
    teardown,
)
from .evaluation import (
    FACTOR_KL_KEY,
    UNUSED_FACTOR_KL,
    factor_kl,
    knn_scores,
    score,
    sphere_factor_count,
    sphere_factor_kls,
    unused_sphere_factors,
)
from .guard import GuardedSVI, NonFiniteLossError, TrainingDivergedError
from .optim import FusedAdam
from .summary import RunPaths, environment, write_metrics, write_summary

__all__ = ["Trainer", "train"]

logger = logging.getLogger("pyro_svae.train")

SPLITS = ("train", "valid", "test")
#: seeds of the fixed generators drawing dynamically binarised evaluation data
_VALID_SEED, _TEST_SEED = 1, 2


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise :class:`KeyboardInterrupt` on ``SIGTERM`` inside the block (main thread only), so that a
    terminated run stops as an interrupted one; the previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class _Snapshot:
    """In-memory state to roll back to after a non-finite step."""

    model: dict[str, Tensor]
    optim: dict[str, Any]
    step: int
    totals: dict[str, float]
    count: int
    clip: dict[str, Any]


def _clone_state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _with_lr(optim_state: dict[str, Any], lr: float) -> dict[str, Any]:
    """A deep copy of a ``PyroOptim.get_state()`` with every learning rate set to ``lr``."""
    state = copy.deepcopy(optim_state)
    for per_param in state.values():
        for group in per_param["param_groups"]:
            group["lr"] = lr
    return state


class Trainer:
    """Train a :class:`~pyro_svae.models.vae.VAE` as configured; :meth:`run` returns the summary.

    :param TrainConfig config: the run's settings.
    :param datasets: optional ``{"train", "valid", "test"}`` :class:`~pyro_svae.data.ImageData`
        to use instead of loading ``config.dataset`` (tests, custom data).

    Creating a trainer loads the data, clears Pyro's parameter store, seeds every generator, sets
    torch's thread count if ``config.threads`` is given and builds the model; nothing is written
    until :meth:`run`. With ``config.distributed`` it first joins (or creates, from ``torchrun``'s
    environment) the process group and takes rank 0's configuration; :meth:`close` (called by
    :func:`train`) destroys a group it created.
    """

    def __init__(
        self, config: TrainConfig, *, datasets: Mapping[str, ImageData] | None = None
    ) -> None:
        config.validate()
        self.dist: DistContext | None = None
        if config.distributed:
            self.dist = setup(config.device)
        try:
            self._init(config, datasets)
        except BaseException:
            self.close()
            raise

    def _init(self, config: TrainConfig, datasets: Mapping[str, ImageData] | None) -> None:
        if self.dist is not None:
            config = self.dist.broadcast_object(config)  # every rank trains rank 0's settings
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device) if self.dist is None else self.dist.device
        self.is_main = self.dist is None or self.dist.is_main
        self.paths = RunPaths(config.run_dir)
        self._on_main(self._check_run_dir)
        if self.dist is None:
            self.data = self._load_data(datasets)
        else:
            self._check_world()
            with self.dist.local_main_first():
                self.data = self._load_data(datasets)
            if len(self.data["train"]) < self.dist.world_size:
                raise ValueError(
                    f"the training split has {len(self.data['train'])} points, fewer than the "
                    f"{self.dist.world_size} processes"
                )
        train = self.data["train"]
        self.likelihood = config.likelihood or (
            "bernoulli" if train.likelihood == "bernoulli" else "discretized_logistic"
        )
        self.num_batches = math.ceil(len(train) / config.batch_size)
        self.steps_per_epoch = min(self.num_batches, config.max_train_batches or self.num_batches)

        pyro.clear_param_store()
        pyro.set_rng_seed(config.seed)
        model_class, flow_kwargs = VAE, {}
        if config.flow is not None:
            model_class = FlowVAE
            flow_kwargs = {
                "flow": config.flow,
                "flow_type": config.flow_type,
                "mixture_components": config.mixture_components,
                "planar_min_det": config.planar_min_det,
            }
        self.vae = model_class(
            config.latent,
            train.dim,
            hidden=config.hidden,
            arch=config.arch,
            image_shape=train.image_shape,
            likelihood=self.likelihood,
            min_concentration=config.min_concentration,
            covariance=config.covariance,
            diffusion_steps=config.diffusion_steps,
            **flow_kwargs,
        ).to(self.device)
        capacity = None
        if config.capacity is not None:
            c_min, c_max, epochs = config.capacity
            capacity = CapacitySchedule(c_min, c_max, round(epochs * self.steps_per_epoch))
        self.elbo = AnnealedELBO(
            beta=config.beta,
            warmup_steps=round(config.kl_warmup * self.steps_per_epoch),
            kl=config.kl,
            kl_gradient=config.kl_gradient,
            capacity=capacity,
            max_plate_nesting=self.vae.max_plate_nesting,
        )
        self.lr = config.lr
        self.clip = GradientNormClip(config.grad_clip, config.grad_clip_window)
        self.optim = self._make_optim()
        if self.dist is None:
            self.svi = GuardedSVI(self.vae.model, self.vae.guide, self.optim, self.elbo)
        else:
            self.svi = DistributedSVI(
                self.vae.model,
                self.vae.guide,
                self.optim,
                self.elbo,
                context=self.dist,
                params=self.vae.parameters,
            )
        self.generator = torch.Generator().manual_seed(config.seed)
        # with several sphere factors, each epoch logs the validation KL of every one, so a factor
        # collapsing onto the prior shows while the run goes on (``val_kl_factor_<i>`` columns)
        self.tracks_factor_kl = sphere_factor_count(self.vae) > 1

        self.epoch = 0  # completed epochs
        self.history: list[dict[str, Any]] = []
        self.best_val_elbo = -math.inf
        self.best_epoch = 0
        self.best_params: dict[str, Tensor] | None = None
        self.bad_epochs = 0  # epochs after burn-in without a validation improvement
        self.stopped_early = False
        self.recoveries = 0  # non-finite steps recovered from, whole run
        self._failures = 0  # consecutive failures without getting past the failure point
        self._failure_step = -1
        self._saved_epoch: int | None = None

    # ------------------------------------------------------------------------------------------
    # set-up
    # ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy the process group if this trainer created it (no-op otherwise)."""
        if self.dist is not None:
            teardown(self.dist)

    def _on_main(self, fn):
        """``fn()`` here, or, when distributed, on rank 0 with its result (or error) on every rank."""
        return fn() if self.dist is None else self.dist.run_on_main(fn)

    def _check_world(self) -> None:
        """The global batch must split evenly over the processes."""
        world, batch = self.dist.world_size, self.config.batch_size
        if batch % world:
            raise ValueError(
                f"batch_size {batch} is the global batch, split over the {world} processes: it "
                f"must be a multiple of {world} (e.g. {world * -(-batch // world)})"
            )

    def _score(self, data: ImageData, **kwargs) -> dict[str, float]:
        """:func:`score`, split over the processes when distributed."""
        if self.dist is None:
            return score(self.vae, data, **kwargs)
        return sharded_score(self.dist, self.vae, data, **kwargs)

    def _load_data(self, datasets: Mapping[str, ImageData] | None) -> dict[str, ImageData]:
        cfg = self.config
        if datasets is None:
            # split seed 0: every training seed sees the same train / valid split
            datasets = load_splits(cfg.dataset, SPLITS, root=cfg.data_dir, device=self.device)
        missing = [s for s in SPLITS if s not in datasets]
        if missing:
            raise ValueError(f"datasets lacks the split(s) {missing}; give train, valid and test")
        data = {s: datasets[s].to(self.device) for s in SPLITS}
        for split, d in data.items():
            if len(d) == 0:
                raise ValueError(f"the {split} split of {cfg.dataset} is empty")
        return data

    def _make_optim(self, state: dict[str, Any] | None = None) -> pyro.optim.PyroOptim:
        optim = FusedAdam({"lr": self.lr}, clip=self.clip)
        if state:
            optim.set_state(_with_lr(state, self.lr))
        return optim

    def _set_optim(self, optim: pyro.optim.PyroOptim) -> None:
        self.optim = optim
        self.svi.optim = optim

    # ------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (tensors and plain values)."""
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "elbo_step": self.elbo.step,
            "lr": self.lr,
            "model": self.vae.state_dict(),
            "optim": self.optim.get_state(),
            "grad_clip": self.clip.state_dict(),
            "best": {
                "params": self.best_params,
                "epoch": self.best_epoch,
                "val_elbo": self.best_val_elbo,
            },
            "early_stopping": {"bad_epochs": self.bad_epochs, "stopped": self.stopped_early},
            "guard": {
                "recoveries": self.recoveries,
                "failures": self._failures,
                "failure_step": self._failure_step,
            },
            "history": self.history,
            "rng": capture_rng_state(self.generator, self.device),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (checked against the current configuration)."""
        saved = TrainConfig.from_dict(state["config"])
        conflicts = resume_conflicts(saved, self.config)
        if conflicts:
            changes = "; ".join(
                f"{k}: {old!r} in the run, {new!r} now" for k, (old, new) in conflicts.items()
            )
            raise ValueError(
                f"cannot resume {self.paths.checkpoint}: the configuration differs in settings that "
                f"change training ({changes}). Pass the run's settings, or start a new run in "
                "another --out folder."
            )
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"cannot resume {self.paths.checkpoint}: it has {state['steps_per_epoch']} steps per "
                f"epoch, the data now give {self.steps_per_epoch} (was the dataset changed?)"
            )
        self.vae.load_state_dict(state["model"])
        self.lr = state["lr"]
        self._set_optim(self._make_optim(state["optim"]))
        if "grad_clip" in state:  # checkpoints written before the norm was tracked start afresh
            self.clip.load_state_dict(state["grad_clip"])
            self.clip.to(self.device)
        self.elbo.set_step(state["elbo_step"])
        self.epoch = state["epoch"]
        self._saved_epoch = self.epoch
        self.history = list(state["history"])
        best = state["best"]
        self.best_params = best["params"]
        self.best_epoch, self.best_val_elbo = best["epoch"], best["val_elbo"]
        self.bad_epochs = state["early_stopping"]["bad_epochs"]
        self.stopped_early = state["early_stopping"]["stopped"]
        guard = state["guard"]
        self.recoveries, self._failures = guard["recoveries"], guard["failures"]
        self._failure_step = guard["failure_step"]
        restore_rng_state(state["rng"], self.generator, self.device)

    def _save(self, improved: bool) -> None:
        if self.is_main:
            save_checkpoint(self.paths.checkpoint, self.state_dict())
        self._saved_epoch = self.epoch
        if not self.is_main:
            return
        if improved:
            self._save_best()
        write_metrics(self.paths, self.history)

    def _save_best(self) -> None:
        if not self.is_main:
            return
        params = self.best_params if self.best_params is not None else self.vae.state_dict()
        save_checkpoint(
            self.paths.best,
            {
                "model": params,
                "epoch": self.best_epoch,
                "val_elbo": self.best_val_elbo,
                "config": self.config.to_dict(),
            },
        )

    def _check_run_dir(self) -> None:
        """Fail fast (before loading data) when the run folder does not fit resume / overwrite."""
        cfg, paths = self.config, self.paths
        if cfg.resume and not paths.checkpoint.exists():
            raise FileNotFoundError(
                f"nothing to resume: {paths.checkpoint} does not exist (start the run without "
                "--resume, or point --out at the run folder)"
            )
        if not cfg.resume and not cfg.overwrite and paths.checkpoint.exists():
            raise FileExistsError(
                f"{paths.root} already holds a run ({paths.checkpoint.name}); pass --resume to "
                "continue it, --overwrite to start it over, or choose another --out"
            )

    def _prepare_run_dir(self) -> None:
        cfg, paths = self.config, self.paths
        self._on_main(self._check_run_dir)
        if cfg.resume:
            self.load_state_dict(self._on_main(lambda: load_checkpoint(paths.checkpoint)))
            if self.is_main:
                write_metrics(self.paths, self.history)
                logger.info("resumed %s after epoch %d", paths.checkpoint, self.epoch)
        if not self.is_main:
            return
        if cfg.overwrite:
            for path in (
                paths.checkpoint,
                paths.best,
                paths.summary,
                paths.metrics_jsonl,
                paths.metrics_csv,
            ):
                path.unlink(missing_ok=True)
        paths.root.mkdir(parents=True, exist_ok=True)
        write_json(paths.config, cfg.to_dict())

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------

    def _snapshot(self, totals: dict[str, float], count: int) -> _Snapshot:
        return _Snapshot(
            model=_clone_state(self.vae),
            optim=copy.deepcopy(self.optim.get_state()),
            step=self.elbo.step,
            totals=dict(totals),
            count=count,
            clip=self.clip.state_dict(),
        )

    def _recover(
        self, err: NonFiniteLossError, epoch: int, batch: int, attempt: int, snap: _Snapshot
    ) -> None:
        """Roll back to ``snap`` and lower the learning rate, or give up."""
        cfg = self.config
        self._failures += 1
        self._failure_step = max(self._failure_step, attempt)
        where = f"epoch {epoch}, step {attempt} (batch {batch + 1}/{self.steps_per_epoch})"
        if self._failures > cfg.max_retries:
            saved = (
                f"the last checkpoint ({self.paths.checkpoint}, end of epoch {self._saved_epoch}) is intact"
                if self._saved_epoch
                else "no epoch was completed, so there is no checkpoint"
            )
            raise TrainingDivergedError(
                f"training diverged: {err} at {where} with learning rate {self.lr:.3g}, after "
                f"{cfg.max_retries} retries (each restores the last good parameters and multiplies "
                f"the learning rate by {cfg.lr_decay}); {saved}. Try a lower --lr, a larger "
                "--min-concentration or a KL warm-up, or resume with more --max-retries."
            ) from err
        old_lr = self.lr
        self.lr *= cfg.lr_decay
        self.recoveries += 1
        self.vae.load_state_dict(snap.model)
        self._set_optim(self._make_optim(snap.optim))
        self.clip.load_state_dict(snap.clip)
        self.elbo.set_step(snap.step)
        if not self.is_main:
            return
        logger.warning(
            "%s at %s: restored the parameters of step %d, learning rate %.3g -> %.3g (retry %d/%d)",
            err,
            where,
            snap.step,
            old_lr,
            self.lr,
            self._failures,
            cfg.max_retries,
        )

    def train_epoch(self) -> dict[str, Any]:
        """Train one epoch, validate, update early stopping, checkpoint; returns the metrics row."""
        cfg = self.config
        train, epoch = self.data["train"], self.epoch + 1
        n = len(train)
        start = time.perf_counter()
        totals = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0}
        count = 0
        recoveries_before = self.recoveries
        self.vae.train()
        if self.dist is not None:  # each process its own latent noise, reproducible per epoch
            self.dist.seed_stream(cfg.seed, TRAIN_STREAM, epoch)
        snap = self._snapshot(totals, count)
        # the global batches; a DistributedSVI step trains on this process's slice of each
        batches = train.batches(cfg.batch_size, shuffle=True, generator=self.generator)
        with tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not (cfg.progress and self.is_main),
            leave=False,
            dynamic_ncols=True,
        ) as bar:
            for i, batch in enumerate(batches):
                if i >= self.steps_per_epoch:
                    break
                while True:
                    attempt = self.elbo.step + 1
                    try:
                        self.svi.step(batch.x, num_data=n)
                    except NonFiniteLossError as err:
                        self._recover(err, epoch, i, attempt, snap)
                        totals, count = dict(snap.totals), snap.count
                        continue
                    break
                if self.elbo.step >= self._failure_step:
                    self._failures, self._failure_step = 0, -1
                terms = self.elbo.last_terms
                totals["loss"] += terms.loss / n
                totals["reconstruction"] += terms.reconstruction / n
                totals["kl"] += terms.kl / n
                count += 1
                bar.update(1)
                bar.set_postfix(loss=f"{totals['loss'] / count:.2f}", refresh=False)
                if (i + 1) % cfg.snapshot_every == 0:
                    snap = self._snapshot(totals, count)
        train_seconds = time.perf_counter() - start

        start = time.perf_counter()
        self.vae.eval()
        val = self._score(
            self.data["valid"],
            batch_size=cfg.eval_batch_size,
            limit=cfg.max_eval_points,
            seed=_VALID_SEED,
        )
        factor_kls = self._validation_factor_kls() if self.tracks_factor_kl else []
        self.vae.train()
        self.epoch = epoch
        improved = val["elbo"] > self.best_val_elbo
        if improved:
            self.best_val_elbo, self.best_epoch, self.bad_epochs = val["elbo"], epoch, 0
            self.best_params = _clone_state(self.vae)
        elif epoch > cfg.early_stopping_burn_in:
            self.bad_epochs += 1
        if cfg.look_ahead and self.bad_epochs >= cfg.look_ahead:
            self.stopped_early = True
        row = {
            "epoch": epoch,
            "step": self.elbo.step,
            "train_loss": totals["loss"] / count,
            "train_reconstruction": totals["reconstruction"] / count,
            "train_kl": totals["kl"] / count,
            "val_elbo": val["elbo"],
            "val_reconstruction": val["reconstruction"],
            "val_kl": val["kl"],
            **{f"{FACTOR_KL_KEY}{i}": kl for i, kl in enumerate(factor_kls, start=1)},
            "best_epoch": self.best_epoch,
            "lr": self.lr,
            "kl_weight": self.elbo.kl_weight(),
            "capacity": self.elbo.current_capacity(),
            "nan_recoveries": self.recoveries - recoveries_before,
            **self.clip.epoch_stats(),
            "seconds": train_seconds,
            "val_seconds": time.perf_counter() - start,
        }
        self.history.append(row)
        self._save(improved)
        self._report(row)
        return row

    def _validation_factor_kls(self) -> list[float]:
        """Mean validation KL of every sphere factor (see :func:`sphere_factor_kls`)."""
        cfg = self.config
        entries = self._on_main(
            lambda: factor_kl(
                self.vae,
                self.data["valid"],
                batch_size=cfg.eval_batch_size,
                limit=cfg.max_eval_points,
                seed=_VALID_SEED,
            )
        )
        return sphere_factor_kls(entries)

    def _report(self, row: dict[str, Any]) -> None:
        if not self.is_main:
            return
        msg = (
            f"epoch {row['epoch']:>4}  loss {row['train_loss']:9.3f}  val ELBO {row['val_elbo']:9.3f}"
            f"  (best {self.best_val_elbo:.3f} @ {self.best_epoch})  KL {row['train_kl']:7.3f}"
            f"  lr {row['lr']:.2g}  {row['seconds']:.1f}s"
        )
        factor_kls = [v for k, v in row.items() if k.startswith(FACTOR_KL_KEY)]
        if factor_kls:
            msg += "  val KL per factor " + " ".join(f"{kl:.2f}" for kl in factor_kls)
        if self.stopped_early:
            msg += f"  -> early stop: no improvement for {self.bad_epochs} epochs"
        if self.config.progress:
            tqdm.write(msg, file=sys.stderr)
        else:
            logger.info(msg)

    # ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train (or continue) until ``epochs`` or early stopping, then evaluate the best model on
        the test split and write ``summary.json``; returns the summary.

        :raises TrainingDivergedError: when non-finite losses persist after ``max_retries``.
        """
        start = time.perf_counter()
        self._prepare_run_dir()
        if self.dist is not None:  # the same starting point everywhere (also after a resume)
            self.dist.broadcast_module(self.vae)
        try:
            with _sigterm_as_interrupt():
                while self.epoch < self.config.epochs and not self.stopped_early:
                    self.train_epoch()
                return self._finish(start)
        except KeyboardInterrupt:
            if self._saved_epoch:
                hint = (
                    f"{self.paths.checkpoint} holds the run after epoch {self._saved_epoch}; continue "
                    "it with the same command plus --resume (or train(replace(config, resume=True)))"
                )
            else:
                hint = "no epoch was completed, so there is nothing to resume"
            if self.is_main:
                print(f"\ninterrupted: {hint}", file=sys.stderr)
            raise

    def _finish(self, start: float) -> dict[str, Any]:
        cfg = self.config
        if self.best_params is not None:
            self.vae.load_state_dict(self.best_params)
        self._save_best()
        self.vae.eval()
        if self.dist is not None:
            self.dist.seed_stream(cfg.seed, TEST_STREAM, 0)
        test = self.data["test"]
        metrics = self._score(
            test,
            batch_size=cfg.eval_batch_size,
            limit=cfg.max_eval_points,
            ll_samples=cfg.ll_samples,
            seed=_TEST_SEED,
            progress=cfg.progress and self.is_main,
        )
        knn = self._on_main(
            lambda: knn_scores(
                self.vae,
                self.data["train"],
                test,
                cfg.knn_labels,
                batch_size=cfg.eval_batch_size,
                limit=cfg.max_eval_points,
                seed=cfg.seed,
            )
        )
        kl_per_factor = self._on_main(
            lambda: factor_kl(
                self.vae,
                test,
                batch_size=cfg.eval_batch_size,
                limit=cfg.max_eval_points,
                seed=_TEST_SEED,
            )
        )
        unused = unused_sphere_factors(kl_per_factor)
        if unused and self.is_main:
            print(
                f"warning: {len(unused)} latent sphere factor(s) carry almost no information "
                f"(mean KL to the prior below {UNUSED_FACTOR_KL} nats on the test set): "
                f"{'; '.join(unused)}. Their posteriors collapsed onto the prior during training; "
                "a KL warm-up (--kl-warmup) or another seed may keep them in use.",
                file=sys.stderr,
            )
        summary = {
            "config": cfg.to_dict(),
            "run_dir": str(self.paths.root),
            "data": {
                "dataset": cfg.dataset,
                "likelihood": self.likelihood,
                **{f"{s}_points": len(d) for s, d in self.data.items()},
                "test_points_evaluated": min(len(test), cfg.max_eval_points or len(test)),
            },
            "latent_space": self.vae.spec.describe(),
            "num_parameters": sum(p.numel() for p in self.vae.parameters()),
            "steps_per_epoch": self.steps_per_epoch,
            "epochs_trained": self.epoch,
            "steps": self.elbo.step,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
            "best_val_elbo": self.best_val_elbo,
            "final_lr": self.lr,
            "nan_recoveries": self.recoveries,
            "test": {**metrics, "ll_samples": cfg.ll_samples},
            "knn": knn,
            "kl_per_factor": kl_per_factor,
            "unused_sphere_factors": unused,
            "train_seconds": sum(row["seconds"] for row in self.history),
            "seconds_per_epoch": (
                sum(row["seconds"] for row in self.history) / len(self.history)
                if self.history
                else None
            ),
            "wall_time_s": time.perf_counter() - start,
            "environment": environment(self.device),
            "distributed": (
                None
                if self.dist is None
                else {"world_size": self.dist.world_size, "backend": self.dist.backend}
            ),
            "files": self.paths.as_dict(),
        }
        if self.is_main:
            write_summary(self.paths, summary)
        return summary


def train(
    config: TrainConfig, *, datasets: Mapping[str, ImageData] | None = None
) -> dict[str, Any]:
    """Run :class:`Trainer` for ``config`` and return its summary (also in ``summary.json``);
    with ``config.distributed``, call it in every process (each returns the summary, rank 0
    writes it)."""
    trainer = Trainer(config, datasets=datasets)
    try:
        return trainer.run()
    finally:
        trainer.close()

"""``TrainConfig``: every setting of a training run, validated, JSON-serialisable with ``asdict``."""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from pyro_svae.data import DATASETS
from pyro_svae.flows import parse_flow_spec
from pyro_svae.flows.sphere import DEFAULT_MIXTURE_COMPONENTS
from pyro_svae.infer.elbo import KL_GRADIENTS, KL_MODES, PATH_NEEDS_MC
from pyro_svae.latent_spec import parse_latent_spec
from pyro_svae.models.vae import LIKELIHOODS

from .clipping import DEFAULT_CLIP_WINDOW

__all__ = [
    "ARCHS",
    "RESUME_MAY_CHANGE",
    "VALUES_BEFORE_FIELD_EXISTED",
    "TrainConfig",
    "resume_conflicts",
]

ARCHS = ("mlp", "conv")

#: fields that may differ between a run and its ``resume``: they change neither the model nor the
#: training settings, only how long it runs, where it runs, reads and writes, and how it is
#: evaluated (another device or thread count may change floating-point rounding, so the
#: bit-for-bit guarantee holds for an unchanged device and thread count). ``distributed`` may change
#: too: the global batch stays ``batch_size``, only the latent-noise streams (one per process)
#: differ, so bit for bit also needs the same number of processes.
RESUME_MAY_CHANGE = frozenset(
    {
        "epochs",
        "early_stopping_burn_in",
        "look_ahead",
        "device",
        "threads",
        "data_dir",
        "out",
        "progress",
        "resume",
        "overwrite",
        "ll_samples",
        "eval_batch_size",
        "max_eval_points",
        "knn_labels",
        "max_retries",
        "lr_decay",
        "distributed",
    }
)


#: The fields added after the first version, with the value each had when it was introduced. A saved
#: config without one of them was written before it existed, so it trained with that value, which
#: is not necessarily today's default: :meth:`TrainConfig.from_dict` fills absent fields from here,
#: so that changing a default never changes what an old run is taken to have trained with (e.g. when
#: ``reproduce.py`` decides whether a saved run is the one asked for). A new field needs an entry
#: (a test checks this).
VALUES_BEFORE_FIELD_EXISTED: dict[str, Any] = {
    "diffusion_steps": None,
    "flow": None,
    "flow_type": "static",
    "distributed": False,
    "mixture_components": 4,
    "kl_gradient": "total",
    "kl": "auto",
    "grad_clip": None,
    "grad_clip_window": 500,
    "planar_min_det": 0.0,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Settings of one training run (see ``python -m pyro_svae train --help`` for each flag).

    Durations (``epochs``, ``kl_warmup``, the third entry of ``capacity``, ``early_stopping_burn_in``,
    ``look_ahead``) are in epochs; ``kl_warmup`` and ``capacity`` are converted to SVI steps
    (minibatches) for :class:`~pyro_svae.infer.AnnealedELBO`. ``likelihood=None`` picks
    ``"bernoulli"`` for binary data and ``"discretized_logistic"`` for grey data. ``out=None`` means
    ``runs/<dataset>-<latent>-seed<seed>`` (see :attr:`run_dir`). ``max_train_batches`` and
    ``max_eval_points`` cap the work per epoch / per evaluation, for smoke runs and tests.
    ``threads`` sets :func:`torch.set_num_threads` (``None``: torch's default).
    ``grad_clip=k`` clips the global gradient norm of each step at ``k`` times the median norm of
    the previous ``grad_clip_window`` steps (see :mod:`pyro_svae.train.clipping`); every epoch's
    metrics carry the median and largest norm either way.
    ``distributed=True`` trains data-parallel in every process of a ``torchrun`` launch, each on
    ``batch_size / world_size`` points of every global batch (see :mod:`pyro_svae.train.distributed`).
    Invalid values raise :class:`ValueError` naming the field.
    """

    dataset: str = "dynamic_mnist"
    latent: str = "vmf:4,4"
    hidden: tuple[int, ...] = (256, 128)
    arch: str = "mlp"
    likelihood: str | None = None
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    beta: float = 1.0
    kl_warmup: float = 0.0
    kl: str = "auto"
    kl_gradient: str = "total"
    grad_clip: float | None = None
    grad_clip_window: int = DEFAULT_CLIP_WINDOW
    capacity: tuple[float, float, float] | None = None
    early_stopping_burn_in: int = 0
    look_ahead: int | None = 50
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    data_dir: str | None = None
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    ll_samples: int = 500
    eval_batch_size: int = 500
    max_train_batches: int | None = None
    max_eval_points: int | None = None
    max_retries: int = 3
    lr_decay: float = 0.5
    snapshot_every: int = 100
    min_concentration: float = 1.0
    covariance: str = "diag"
    diffusion_steps: int | None = None
    flow: str | None = None
    flow_type: str = "static"
    mixture_components: int = DEFAULT_MIXTURE_COMPONENTS
    planar_min_det: float = 0.0
    progress: bool = True
    distributed: bool = False
    knn_labels: tuple[int, ...] = field(default=(100, 600, 1000))

    def __post_init__(self) -> None:
        self._normalise()
        self.validate()

    # ------------------------------------------------------------------------------------------

    def _normalise(self) -> None:
        """Turn JSON lists back into tuples and paths into strings (so ``asdict`` round-trips)."""
        if isinstance(self.hidden, list | tuple):
            self.hidden = tuple(self.hidden)
        if isinstance(self.knn_labels, list | tuple):
            self.knn_labels = tuple(self.knn_labels)
        if isinstance(self.capacity, list | tuple):
            self.capacity = tuple(self.capacity)
        if isinstance(self.data_dir, Path):
            self.data_dir = str(self.data_dir)
        if isinstance(self.out, Path):
            self.out = str(self.out)
        if self.look_ahead is None:
            self.look_ahead = 0
        if isinstance(self.flow, str) and self.flow.strip().lower() in ("", "none"):
            self.flow = None
        if isinstance(self.latent, str):
            with contextlib.suppress(TypeError, ValueError):  # reported by validate()
                self.latent = parse_latent_spec(self.latent).format()

    def validate(self) -> None:
        """Raise :class:`ValueError` with a clear message for the first invalid field."""

        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        if self.dataset not in DATASETS:
            raise ValueError(
                f"dataset must be one of {', '.join(sorted(DATASETS))}, got {self.dataset!r}"
            )
        try:
            parse_latent_spec(self.latent)
        except (TypeError, ValueError) as err:
            raise ValueError(f"latent: {err}") from None
        if (
            not isinstance(self.hidden, tuple)
            or not self.hidden
            or not all(_is_int(h) and h > 0 for h in self.hidden)
        ):
            raise bad("hidden", "a non-empty list of positive layer sizes, e.g. (256, 128)")
        if self.arch not in ARCHS:
            raise bad("arch", f"one of {ARCHS}")
        if self.likelihood is not None and self.likelihood not in LIKELIHOODS:
            raise bad("likelihood", f"None (from the dataset) or one of {LIKELIHOODS}")
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "snapshot_every",
            "grad_clip_window",
        ):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "a positive integer")
        for name in ("early_stopping_burn_in", "look_ahead", "ll_samples", "max_retries", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "an integer >= 0")
        for name in ("max_train_batches", "max_eval_points", "threads"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise bad(name, "None or a positive integer")
        if not _is_number(self.lr) or self.lr <= 0:
            raise bad("lr", "a finite number > 0")
        for name in ("beta", "kl_warmup", "min_concentration"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a finite number >= 0")
        if not _is_number(self.lr_decay) or not 0 < self.lr_decay < 1:
            raise bad("lr_decay", "a number in (0, 1)")
        if self.capacity is not None and (
            not isinstance(self.capacity, tuple)
            or len(self.capacity) != 3
            or not all(_is_number(c) and c >= 0 for c in self.capacity)
        ):
            raise bad("capacity", "None or (c_min, c_max, epochs), three numbers >= 0")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            raise bad("grad_clip", "None (no clipping) or a finite number > 0 (e.g. 5)")
        if self.covariance not in ("diag", "full"):
            raise bad("covariance", "'diag' or 'full'")
        if self.kl not in KL_MODES:
            raise bad("kl", "'auto', 'analytic' or 'mc'")
        if self.kl_gradient not in KL_GRADIENTS:
            raise bad("kl_gradient", "'total', 'path' or 'base_path'")
        if self.kl_gradient != "total" and self.kl == "analytic":
            raise ValueError(PATH_NEEDS_MC)
        try:
            spec = parse_flow_spec(self.flow, self.flow_type)
        except (TypeError, ValueError) as err:
            raise ValueError(f"flow: {err}") from None
        if not _is_number(self.planar_min_det) or not 0 <= self.planar_min_det < 1:
            raise bad("planar_min_det", "a number in [0, 1) (0: Pyro's planar step)")
        if self.planar_min_det and not (spec and spec.has_kind("planar")):
            raise bad("planar_min_det", "0 unless the flow has planar steps")
        if not (_is_int(self.mixture_components) and self.mixture_components > 0):
            raise bad(
                "mixture_components", "a positive number of Möbius dilations per mobiusmix step"
            )
        if self.diffusion_steps is not None and not (
            _is_int(self.diffusion_steps) and self.diffusion_steps > 0
        ):
            raise bad(
                "diffusion_steps",
                "None (exact diffusion sampler) or a positive number of random-walk steps",
            )
        if not isinstance(self.knn_labels, tuple) or not all(
            _is_int(k) and k > 0 for k in self.knn_labels
        ):
            raise bad("knn_labels", "a list of positive integers (empty: no k-NN)")
        for name in ("resume", "overwrite", "progress", "distributed"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "True or False")
        if self.resume and self.overwrite:
            raise ValueError(
                "resume and overwrite exclude each other: continue a run or restart it"
            )
        for name in ("data_dir", "out"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise bad(name, "None or a non-empty path")
        if not isinstance(self.device, str):
            raise bad("device", "a string such as 'cpu', 'cuda' or 'cuda:1'")
        try:
            device = torch.device(self.device)
        except (RuntimeError, ValueError):
            raise bad("device", "'cpu', 'cuda' or 'cuda:<index>'") from None
        if device.type not in ("cpu", "cuda"):
            raise bad("device", "'cpu', 'cuda' or 'cuda:<index>'")

    # ------------------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """The run folder: ``out``, or ``runs/<dataset>-<latent>-seed<seed>`` when ``out`` is None."""
        if self.out is not None:
            return Path(self.out).expanduser()
        latent = re.sub(r"[^A-Za-z0-9]+", "_", self.latent).strip("_")
        return Path("runs") / f"{self.dataset}-{latent}-seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists when dumped)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a :class:`ValueError`. Absent keys (a
        config saved before those fields existed) take :data:`VALUES_BEFORE_FIELD_EXISTED`, others
        the defaults."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        absent = {k: v for k, v in VALUES_BEFORE_FIELD_EXISTED.items() if k not in data}
        return cls(**absent, **data)


def resume_conflicts(saved: TrainConfig, requested: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose change would make ``requested`` not continue the run of ``saved``:
    ``{name: (saved value, requested value)}``, empty when the resume is allowed."""
    old, new = saved.to_dict(), requested.to_dict()
    return {
        name: (old[name], new[name])
        for name in old
        if name not in RESUME_MAY_CHANGE and old[name] != new[name]
    }

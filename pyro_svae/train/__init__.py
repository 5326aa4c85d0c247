"""Training: the SVI loop, checkpoints and resume, NaN recovery, early stopping and the run summary.

>>> from pyro_svae.train import TrainConfig, train
>>> summary = train(TrainConfig(dataset="dynamic_mnist", latent="vmf:4,4", epochs=10, out="runs/a"))  # doctest: +SKIP

The same from the shell: ``python -m pyro_svae train --latent vmf:4,4 --epochs 10 --out runs/a``.
A run folder holds ``checkpoint.pt`` (latest state, for ``resume``), ``best.pt`` (best validation
parameters), ``metrics.jsonl`` / ``metrics.csv`` (one row per epoch), ``config.json`` and
``summary.json``. The summary holds the test metrics, the k-NN accuracies and ``kl_per_factor``,
the test KL split by sphere factor (and by Gaussian dimension); a sphere factor whose KL stayed
below half a nat (its posterior collapsed onto the prior) is listed in ``unused_sphere_factors``
and named in a warning at the end of the run. With more than one sphere factor, every epoch also
logs the validation KL of each factor (``val_kl_factor_1``, ... in the metrics, shown on the epoch
line and drawn together in one panel of the training curves), so a collapse can be seen, and the
run stopped, while it happens; this costs one extra encoder pass over the validation split.
Every epoch also logs the median and largest global gradient norm of its steps
(``grad_norm_median``, ``grad_norm_max``); ``grad_clip`` clips outlying norms relative to their
recent median (:class:`GradientNormClip`, which also counts ``clipped_steps``).
"""

from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .clipping import GradientNormClip
from .config import RESUME_MAY_CHANGE, TrainConfig, resume_conflicts
from .device import resolve_device
from .guard import GuardedSVI, NonFiniteLossError, TrainingDivergedError
from .loop import Trainer, train
from .summary import RunPaths

__all__ = [
    "RESUME_MAY_CHANGE",
    "GradientNormClip",
    "GuardedSVI",
    "NonFiniteLossError",
    "RunPaths",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "atomic_write",
    "load_checkpoint",
    "resolve_device",
    "resume_conflicts",
    "save_checkpoint",
    "train",
]

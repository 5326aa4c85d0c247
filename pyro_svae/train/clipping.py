"""The global gradient norm of every training step, and optional clipping relative to its history.

The ELBO of a minibatch is scaled to the whole training set (``pyro.plate(..., subsample=...)``),
and the gradient norm falls by orders of magnitude while a VAE trains, so no fixed threshold
suits a whole run. :class:`GradientNormClip` clips instead at ``factor`` times the median norm of
the previous ``window`` steps (adaptive clipping in the spirit of Seetharaman et al. 2020, with a
running median; the lower median for an even ``window``, as :func:`torch.median` takes it): a step whose gradient is a rare outlier, such as the planar flow's path gradient
through a nearly collapsing step, is scaled down to the typical size, while ordinary steps are left
untouched. Clipping starts once ``window`` steps have been seen.

Every step's norm is recorded whether or not it clips, so the training metrics show the median and
largest norm of each epoch and how many steps were clipped. The history is part of the run's
checkpoint, so a resumed run clips exactly as the uninterrupted one.

References:
    Seetharaman, Wichern, Pardo, Le Roux (2020). AutoClip: Adaptive Gradient Clipping for Source
    Separation Networks. IEEE MLSP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["DEFAULT_CLIP_WINDOW", "GradientNormClip"]

#: steps whose norms set the clipping threshold (one epoch of MNIST at batch 100)
DEFAULT_CLIP_WINDOW = 500


class GradientNormClip:
    """Measure the global L2 norm of every step's gradient and optionally clip it.

    :param factor: clip the global norm at ``factor`` times the median norm of the previous
        ``window`` steps; ``None`` measures without clipping.
    :param window: number of previous steps whose median sets the threshold; no step is clipped
        before that many have been seen.

    Calling the object with a step's gradients (every gradient of the step, in a fixed order)
    records the norm and, when it exceeds the threshold, scales all of them in place by
    ``threshold / norm``. Norms stay on the gradients' device until :meth:`epoch_stats`.
    """

    def __init__(self, factor: float | None = None, window: int = DEFAULT_CLIP_WINDOW) -> None:
        if factor is not None and (
            isinstance(factor, bool) or not math.isfinite(factor) or factor <= 0
        ):
            raise ValueError(f"factor must be None or a finite number > 0, got {factor!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.factor = factor
        self.window = window
        self._history: Tensor | None = None  # ring buffer of the last ``window`` norms
        self._seen = 0  # steps recorded in the whole run
        self._epoch_norms: list[Tensor] = []
        self._epoch_clipped: list[Tensor] = []

    @property
    def steps_seen(self) -> int:
        """Steps recorded since the run started."""
        return self._seen

    def threshold(self) -> Tensor | None:
        """The current clipping threshold (``None`` while not clipping)."""
        if self.factor is None or self._history is None or self._seen < self.window:
            return None
        return self.factor * self._history.median()

    def __call__(self, grads: Sequence[Tensor]) -> Tensor:
        """Record the global norm of ``grads``, clip them in place if needed; returns the norm
        before clipping (a 0-dim tensor)."""
        if not grads:
            raise ValueError("no gradients to measure")
        # per-tensor norms in one fused call (in the gradients' dtype; stack promotes mixed
        # dtypes), combined in float64
        per_tensor = torch._foreach_norm(list(grads))
        norm = torch.linalg.vector_norm(torch.stack(per_tensor).to(torch.float64))
        threshold = self.threshold()
        clipped = None
        if threshold is not None:
            # a zero threshold (most recent steps without gradient) clips nothing
            clipped = (norm > threshold) & (threshold > 0)
            scale = torch.where(clipped, threshold / norm, torch.ones_like(norm))
            torch._foreach_mul_(list(grads), scale)  # a float64 0-dim scale: no rounding
        if self._history is None:
            self._history = torch.zeros(self.window, dtype=torch.float64, device=norm.device)
        self._history[self._seen % self.window] = norm
        self._seen += 1
        self._epoch_norms.append(norm)
        if clipped is not None:
            self._epoch_clipped.append(clipped)
        return norm

    def epoch_stats(self) -> dict[str, float]:
        """Median and largest norm (before clipping) and the number of clipped steps since the last
        call, for the epoch's metrics row; resets the per-epoch record."""
        if not self._epoch_norms:
            return {}
        norms = torch.stack(self._epoch_norms)
        clipped = int(torch.stack(self._epoch_clipped).sum()) if self._epoch_clipped else 0
        self._epoch_norms, self._epoch_clipped = [], []
        stats = {
            "grad_norm_median": float(norms.median()),
            "grad_norm_max": float(norms.max()),
        }
        if self.factor is not None:
            stats["clipped_steps"] = clipped
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue clipping exactly (history and this epoch's record)."""
        return {
            "factor": self.factor,
            "window": self.window,
            "seen": self._seen,
            "history": None if self._history is None else self._history.clone(),
            # the per-step entries are never changed in place: a copy of the list is enough
            "epoch_norms": list(self._epoch_norms),
            "epoch_clipped": list(self._epoch_clipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the factor and window are those of this object)."""
        if state["window"] != self.window:
            raise ValueError(
                f"the saved norm history has a window of {state['window']} steps, this clip "
                f"uses {self.window}"
            )
        history = state["history"]
        self._seen = state["seen"]
        self._history = None if history is None else history.clone()
        self._epoch_norms = list(state["epoch_norms"])
        self._epoch_clipped = list(state["epoch_clipped"])

    def to(self, device: torch.device | str) -> GradientNormClip:
        """Move the history to ``device`` (after loading a checkpoint saved elsewhere)."""
        if self._history is not None:
            self._history = self._history.to(device)
        self._epoch_norms = [n.to(device) for n in self._epoch_norms]
        self._epoch_clipped = [c.to(device) for c in self._epoch_clipped]
        return self

"""An SVI step that refuses to apply a non-finite loss or gradient, and the errors it raises."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from pyro.infer.util import torch_item, zero_grads

__all__ = ["GuardedSVI", "NonFiniteLossError", "TrainingDivergedError", "all_finite"]


class NonFiniteLossError(FloatingPointError):
    """A step produced a non-finite loss or gradient; no parameter was changed."""


class TrainingDivergedError(RuntimeError):
    """Training kept producing non-finite losses after the allowed number of retries."""


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite.

    A finite sum implies finite entries (a NaN or an infinity makes the sum NaN or infinite), and a
    sum is one vectorised pass, about ten times cheaper on a CPU than ``isfinite(t).all()``, which
    materialises boolean tensors. Only when some sum is not finite (a bad step, or finite entries
    whose sum overflows) are the entries checked one by one, so the answer is always exact.
    """
    if not tensors:
        return True
    if bool(torch.stack([t.sum() for t in tensors]).isfinite().all()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class GuardedSVI(SVI):
    """:class:`pyro.infer.SVI` whose :meth:`step` checks the loss and every gradient first.

    When either is non-finite (or a distribution rejects non-finite parameters with a
    :class:`ValueError` during the forward pass) the gradients are zeroed, the optimizer is *not*
    stepped and :class:`NonFiniteLossError` is raised, so the parameters are those of the last
    good step and the caller decides how to recover.
    """

    def step(self, *args, **kwargs) -> float:
        with poutine.trace(param_only=True) as capture:
            try:
                loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
            except ValueError as err:
                if "invalid values" not in str(err):
                    raise
                self._discard(capture.trace)
                raise NonFiniteLossError(
                    f"a distribution got non-finite parameters: {err}"
                ) from err
        params = self._params(capture.trace)
        loss = torch_item(loss)
        grads = [p.grad for p in params if p.grad is not None]
        if not (math.isfinite(loss) and all_finite(grads)):
            zero_grads(params)
            what = "loss" if not math.isfinite(loss) else "gradient"
            raise NonFiniteLossError(f"non-finite {what} (loss = {loss})")
        self.optim(params)
        zero_grads(params)
        return loss

    @staticmethod
    def _params(trace) -> set[torch.Tensor]:
        return {site["value"].unconstrained() for site in trace.nodes.values()}

    def _discard(self, trace) -> None:
        zero_grads(self._params(trace))

"""An SVI step that refuses to apply a non-finite loss or gradient, and the errors it raises."""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from pyro.infer.util import torch_item, zero_grads

__all__ = ["GuardedSVI", "NonFiniteLossError", "TrainingDivergedError"]


class NonFiniteLossError(FloatingPointError):
    """A step produced a non-finite loss or gradient; no parameter was changed."""


class TrainingDivergedError(RuntimeError):
    """Training kept producing non-finite losses after the allowed number of retries."""


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


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
        if not (math.isfinite(loss) and _all_finite(grads)):
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

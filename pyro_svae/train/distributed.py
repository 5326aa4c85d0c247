r"""Data-parallel training over several processes with :mod:`torch.distributed`, launched by ``torchrun``.

.. code-block:: console

    torchrun --nproc_per_node 4 -m pyro_svae train --device cuda --batch-size 400 ...   # 4 GPUs
    torchrun --nproc_per_node 2 -m pyro_svae train --distributed --batch-size 100 ...   # 2 CPU processes

Every process (*rank*) holds the whole model, the same data and the same data generator. Each SVI step:

* every rank draws the **global** minibatch of ``batch_size`` points (order and dynamic binarisation
  from the shared generator, so identically on every rank) and keeps its contiguous slice of
  ``batch_size / world_size`` points (:meth:`DistContext.shard`);
* the model's ``pyro.plate("data", N, subsample=...)`` scales the slice's ELBO by ``N / b_r``;
  :class:`DistributedSVI` multiplies the gradients by ``b_r / B`` and sums them over the ranks with one
  :func:`torch.distributed.all_reduce`, which gives exactly the gradient of the global minibatch's
  ELBO as a single process computes it (for equal slices this is the average of the ranks'
  gradients); the loss terms are reduced with it, so the logged losses are the global ones;
* every rank applies the same Adam step to the same parameters, so they stay identical (they are
  broadcast from rank 0 when training starts).

Validation and test metrics are computed by every rank on its slice of each evaluation batch and
the per-point sums are all-reduced; the k-NN accuracy (cheap) is computed by rank 0 and broadcast.
Every decision (early stopping, best model, recovery from a non-finite step) is taken from reduced
values, hence identically on every rank. Checkpoints, metrics, ``config.json`` and the summary are
written by rank 0 only; ``resume`` reads the checkpoint on rank 0 and broadcasts it.

**Randomness.** The data (order, binarisation) do not depend on how a batch is split. The latent
samples do: each rank draws its slice's samples from its own stream, seeded from
``(seed, rank, epoch)`` at the start of every epoch, so a distributed run is a different but equally
valid Monte Carlo realisation of the single-process run (same global batch, same expected gradient),
and it continues bit for bit after ``resume`` with the same number of processes. With a
deterministic guide (e.g. sampling replaced by the posterior mode, as the tests do) a run with any
number of processes equals the single-process run up to floating-point rounding. One exception:
with capacity annealing, :math:`|KL/N - C|` is taken on each rank's slice rather than on the
global batch (a valid estimator of the same objective, but not the same numbers).

**Why not** :class:`~torch.nn.parallel.DistributedDataParallel`: DDP averages the gradients of the
parameters used in its wrapped ``forward``, but an SVI step is not one forward call (the encoder
and the posterior heads run in the guide, the decoder in the model, flows in either), the
parameters are registered with Pyro's param store under the module's own names (see
:meth:`~pyro_svae.models.VAE.guide`), and the non-finite-step
guard must take the same decision on every rank even when one rank fails inside the forward pass
(with DDP the other ranks would wait forever in the backward all-reduce). An explicit all-reduce
of the gradients right before the optimizer step, together with the failure flag and the loss
terms, handles all of that in one collective per step.

The process group is created from ``torchrun``'s environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): backend ``gloo`` for ``device="cpu"``, ``nccl``
with device ``cuda:LOCAL_RANK`` for ``device="cuda"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyro
import torch
import torch.distributed as dist
from pyro.infer.util import zero_grads
from torch import Tensor

from pyro_svae.data import ImageData
from pyro_svae.infer import evaluate
from pyro_svae.infer.elbo import ELBOTerms

from .evaluation import eval_batches
from .guard import GuardedSVI, NonFiniteLossError, all_finite

__all__ = [
    "TORCHRUN_VARIABLES",
    "DistContext",
    "DistributedSVI",
    "get_rank",
    "is_main_process",
    "launched_by_torchrun",
    "setup",
    "sharded_score",
    "teardown",
]

T = TypeVar("T")

#: the environment variables through which ``torchrun`` describes the process group
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: tags of the per-rank latent-noise streams (:meth:`DistContext.seed_stream`)
TRAIN_STREAM, TEST_STREAM = 0, 1


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (all of :data:`TORCHRUN_VARIABLES` set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def get_rank() -> int:
    """This process's rank: from the process group if there is one, else ``$RANK``, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that writes files and prints results)."""
    return get_rank() == 0


@dataclass(frozen=True)
class DistContext:
    """This process's place in an initialised process group, and the collectives training uses."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    owns_group: bool  # created by :func:`setup` (so :func:`teardown` may destroy it)

    @property
    def is_main(self) -> bool:
        """Rank 0: writes the run's files, shows progress, logs."""
        return self.rank == 0

    # -- data ----------------------------------------------------------------------------------

    def shard(self, x: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch ``x`` (the first ``len(x) % world``
        ranks get one point more; a slice may be empty when ``len(x) < world``)."""
        return x.tensor_split(self.world_size)[self.rank]

    # -- collectives ---------------------------------------------------------------------------

    def all_reduce_sum(self, values: Tensor) -> Tensor:
        """The sum of ``values`` over the ranks, on this rank's device, identical on every rank."""
        buffer = values.to(self.device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer

    def all_sum(self, values: Tensor) -> Tensor:
        """The float64 sum of ``values`` over the ranks, on the CPU."""
        return self.all_reduce_sum(values.to(torch.float64)).cpu()

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled)."""
        payload = [obj if self.is_main else None]
        dist.broadcast_object_list(payload, src=0, device=self._object_device())
        return payload[0]

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on rank 0 only and return its result on every rank; an exception it raises
        is raised on every rank (so that no rank waits for the others in a later collective)."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as err:  # re-raised below, on every rank
                error = err
        sent = error
        if error is not None:
            try:
                pickle.loads(pickle.dumps(error))
            except Exception:  # an exception that does not pickle: send its text
                sent = RuntimeError(f"{type(error).__name__}: {error}")
        result, received = self.broadcast_object((result, sent))
        if error is not None:
            raise error
        if received is not None:
            raise received
        return result

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Run the block on the first process of each machine before the others (for downloads
        and caches in a folder the processes of a machine share)."""
        if self.local_rank != 0:
            self.barrier()
        try:
            yield
        finally:
            if self.local_rank == 0:
                self.barrier()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Overwrite ``module``'s parameters and buffers with rank 0's, in place."""
        with torch.no_grad():
            for tensor in module.state_dict().values():
                if tensor.device == self.device:
                    dist.broadcast(tensor, src=0)
                else:
                    buffer = tensor.to(self.device)
                    dist.broadcast(buffer, src=0)
                    tensor.copy_(buffer)

    def seed_stream(self, seed: int, stream: int, index: int) -> None:
        """Seed torch's, Python's and NumPy's generators from ``(seed, rank, stream, index)``: each
        rank draws its own latent noise, and reproducibly from any epoch on (resume)."""
        state = np.random.SeedSequence([seed, self.rank, stream, index]).generate_state(1)
        pyro.set_rng_seed(int(state[0]))

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None


def setup(device: str = "cpu") -> DistContext:
    """Join (or create, from ``torchrun``'s environment variables) the default process group.

    ``device="cpu"`` uses the ``gloo`` backend; ``device="cuda"`` uses ``nccl`` with device
    ``cuda:LOCAL_RANK`` (one GPU per process). An already initialised group is used as it is.

    :raises ValueError: without ``torchrun``'s environment variables, without
        :mod:`torch.distributed`, for a device with an explicit index or a missing GPU.
    """
    if not dist.is_available():
        raise ValueError(
            "distributed training needs torch.distributed, which this torch build lacks"
        )
    try:
        requested = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}") from None
    if requested.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if requested.type == "cuda" and requested.index is not None:
        raise ValueError(
            f"with distributed training every process uses the GPU cuda:LOCAL_RANK: give "
            f"device 'cuda', not {device!r} (select GPUs with CUDA_VISIBLE_DEVICES)"
        )
    owns = not dist.is_initialized()
    if owns and not launched_by_torchrun():
        missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
        raise ValueError(
            "distributed training needs the process-group settings that torchrun provides "
            f"(missing: {', '.join(missing)}); launch it as 'torchrun --nproc_per_node N -m "
            "pyro_svae train ...' (the --distributed flag is then implied), or train without "
            "--distributed"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"process with LOCAL_RANK {local_rank} needs GPU cuda:{local_rank}, but only "
                f"{count} GPU(s) are visible: start at most {count} processes per machine"
            )
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
        backend = "nccl"
    else:
        torch_device, backend = torch.device("cpu"), "gloo"
    if owns:
        dist.init_process_group(backend=backend, init_method="env://")
    else:
        backend = dist.get_backend()
        if requested.type == "cpu" and backend == "nccl":
            raise ValueError("the process group uses the nccl backend, which needs device 'cuda'")
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=torch_device,
        backend=str(backend),
        owns_group=owns,
    )


def teardown(context: DistContext | None = None) -> None:
    """Destroy the default process group (only the one :func:`setup` created, given its context)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if context is None or context.owns_group:
        dist.destroy_process_group()


class DistributedSVI(GuardedSVI):
    """:class:`~pyro_svae.train.guard.GuardedSVI` for data-parallel training.

    :meth:`step` takes the **global** minibatch, runs the ELBO on this rank's slice, sums the weighted
    gradients, the loss terms and a failure flag over the ranks in one all-reduce, and then (on every
    rank alike) either raises :class:`~pyro_svae.train.guard.NonFiniteLossError` without changing a
    parameter, or takes the optimizer step with the global gradient. ``elbo.last_terms`` holds the
    global batch's terms afterwards.

    :param params: a callable returning the parameters to synchronise, in an order identical on
        every rank (e.g. ``vae.parameters``): every parameter the model and guide register.
    """

    def __init__(
        self, model, guide, optim, loss, *, context: DistContext, params: Callable[[], Any]
    ) -> None:
        super().__init__(model, guide, optim, loss)
        self.elbo = loss  # SVI keeps only its bound methods
        self.context = context
        self._all_params = params

    def step(self, x: Tensor, **kwargs) -> float:
        """One SVI step on the global batch ``x`` (keyword arguments go to the model and guide)."""
        ctx, elbo = self.context, self.elbo
        local = ctx.shard(x)
        weight = local.shape[0] / x.shape[0]
        params = [p for p in self._all_params() if p.requires_grad]
        failure = ""
        terms = ELBOTerms(0.0, 0.0, 0.0, elbo.kl_weight(), elbo.current_capacity())
        if local.shape[0] > 0:
            try:
                elbo.loss_and_grads(self.model, self.guide, local, **kwargs)
                terms = elbo.last_terms
            except ValueError as err:
                if "invalid values" not in str(err):
                    raise
                failure = f"a distribution got non-finite parameters: {err}"
        else:  # an empty slice (a last batch smaller than the world): no terms, no gradient
            elbo.set_step(elbo.step + 1)

        # one all-reduce: [failure flag, has-gradient flags (counted), loss terms and gradients
        # (weighted by this rank's share of the batch)], in float64
        flags = [1.0 if failure else 0.0] + [float(p.grad is not None) for p in params]
        scalars = [terms.loss * weight, terms.reconstruction * weight, terms.kl * weight]
        grads = [
            torch.zeros(p.numel(), dtype=torch.float64, device=ctx.device)
            if p.grad is None or failure
            else p.grad.detach().reshape(-1).to(ctx.device, torch.float64) * weight
            for p in params
        ]
        head = torch.tensor(flags + scalars, dtype=torch.float64, device=ctx.device)
        reduced = ctx.all_reduce_sum(torch.cat([head, *grads]))
        failed, *has_grad = reduced[: len(flags)].tolist()
        loss, reconstruction, kl = reduced[len(flags) : len(flags) + 3].tolist()
        if failed:
            zero_grads(params)
            raise NonFiniteLossError(
                failure or "a distribution got non-finite parameters in another process"
            )
        offset, used = len(flags) + 3, []
        for p, any_grad in zip(params, has_grad, strict=True):
            n = p.numel()
            if any_grad:
                p.grad = reduced[offset : offset + n].view(p.shape).to(p.device, p.dtype, copy=True)
                used.append(p)
            offset += n
        elbo.last_terms = dataclasses.replace(
            terms, loss=loss, reconstruction=reconstruction, kl=kl
        )
        finite = math.isfinite(loss) and all_finite([p.grad for p in used])
        if not finite:
            zero_grads(params)
            what = "loss" if not math.isfinite(loss) else "gradient"
            raise NonFiniteLossError(f"non-finite {what} (loss = {loss})")
        self.optim(used)
        zero_grads(params)
        return loss


def sharded_score(
    context: DistContext,
    vae,
    data: ImageData,
    *,
    batch_size: int,
    limit: int | None = None,
    ll_samples: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """:func:`~pyro_svae.train.evaluation.score` with every rank evaluating its slice of each batch:
    the per-point means of the ranks are combined by an all-reduce of their sums (same on every rank).

    Every rank draws each whole evaluation batch (binarised from the generator seeded with ``seed``)
    and keeps its slice, so the points and their binarisation are those of a single process."""
    count = 0

    def slices() -> Iterator[Tensor]:
        nonlocal count
        for x in eval_batches(data, batch_size, limit=limit, seed=seed):
            part = context.shard(x)
            if part.shape[0] > 0:
                count += part.shape[0]
                yield part

    keys = ("ll", "elbo", "reconstruction", "kl")
    local = dict.fromkeys(keys, 0.0)
    try:
        local = evaluate(
            vae.model,
            vae.guide,
            slices(),
            num_samples=ll_samples,
            max_plate_nesting=vae.max_plate_nesting,
            progress=progress and context.is_main,
        )
    except ValueError:
        if count:
            raise
    sums = [float(count)] + [local[k] * count if count else 0.0 for k in keys]
    total, *reduced = context.all_sum(torch.tensor(sums)).tolist()
    result = {k: v / total for k, v in zip(keys, reduced, strict=True)}
    if ll_samples == 0:
        result["ll"] = float("nan")
    return result

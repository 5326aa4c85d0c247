"""Cost of one Pyro SVI training step against a hand-written PyTorch loop of the same VAE.

Both loops train the same network (MLP 784-256-128; a vMF, product-of-vMF or Gaussian posterior with
the model's prior, uniform on spheres and standard normal otherwise; Bernoulli likelihood) with Adam
on the same minibatches (SVI with :class:`pyro_svae.train.optim.FusedAdam`, the trainer's optimizer);
the PyTorch loop computes the negative ELBO directly (reconstruction + analytic KL) and calls
``torch.optim.Adam``. A second SVI loop is the
trainer's own step: :class:`~pyro_svae.train.guard.GuardedSVI` (which checks the loss and every
gradient for non-finite values before stepping) with the gradient-norm measurement the trainer makes
on every step for its metrics (:class:`~pyro_svae.train.clipping.GradientNormClip` without a factor:
measuring, not clipping). Steps are timed side by side, interleaved, with a fixed thread count; the
table reports medians and the ratios Pyro / PyTorch (goal: at most 1.3).

``--clock wall`` (the default) times elapsed time. ``--clock cpu`` times the CPU time of the process
(``time.process_time``), which other processes on a shared machine barely disturb; with more than one
thread it also counts the threads' spin-waiting, so use it with ``--threads 1``.

Run::

    python benchmarks/training_step.py --latent vmf:4,4 vmf:9 --batch-size 100 --steps 200 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from pyro.infer import SVI
from torch.distributions import kl_divergence

from pyro_svae.infer import AnnealedELBO
from pyro_svae.models import VAE
from pyro_svae.train.clipping import GradientNormClip
from pyro_svae.train.guard import GuardedSVI
from pyro_svae.train.optim import FusedAdam


def _plain_loss(vae: VAE, x: torch.Tensor, num_data: int) -> torch.Tensor:
    """Negative ELBO written directly with torch: the same computation SVI performs."""
    fns = vae.posteriors(x)
    parts, kl = [], 0.0
    for group, fn in zip(vae.groups, fns, strict=True):
        z = fn.rsample()
        parts.append(z.movedim(-3, -2).flatten(-2) if group.count > 1 else z)
        kl = kl + kl_divergence(fn, vae._prior(group, x)).sum()
    logits = vae.decode(torch.cat(parts, -1))
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return (num_data / x.shape[0]) * (kl - log_lik)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def benchmark(
    latent: str, batch_size: int, steps: int, warmup: int, seed: int, clock: str = "wall"
) -> dict[str, float]:
    now = CLOCKS[clock]

    def _time(fn) -> float:
        start = now()
        fn()
        return now() - start

    torch.manual_seed(seed)
    data = (torch.rand(50 * batch_size, 784) < 0.3).float()
    num_data = data.shape[0]
    pyro.clear_param_store()
    pyro_vae, torch_vae = VAE(latent, 784), VAE(latent, 784, name="plain")
    trainer_vae = VAE(latent, 784, name="trainer")
    torch_vae.load_state_dict(pyro_vae.state_dict())
    trainer_vae.load_state_dict(pyro_vae.state_dict())
    svi = SVI(pyro_vae.model, pyro_vae.guide, FusedAdam({"lr": 1e-3}), AnnealedELBO())
    trainer_optim = FusedAdam({"lr": 1e-3}, clip=GradientNormClip())
    trainer_svi = GuardedSVI(trainer_vae.model, trainer_vae.guide, trainer_optim, AnnealedELBO())
    optimizer = torch.optim.Adam(torch_vae.parameters(), lr=1e-3)

    def torch_step(x):
        optimizer.zero_grad()
        loss = _plain_loss(torch_vae, x, num_data)
        loss.backward()
        optimizer.step()

    times = {"pyro": [], "trainer": [], "torch": []}
    for step in range(warmup + steps):
        x = data[(step * batch_size) % num_data :][:batch_size]
        t_pyro = _time(lambda x=x: svi.step(x, num_data=num_data))
        t_trainer = _time(lambda x=x: trainer_svi.step(x, num_data=num_data))
        t_torch = _time(lambda x=x: torch_step(x))
        if step >= warmup:
            times["pyro"].append(t_pyro)
            times["trainer"].append(t_trainer)
            times["torch"].append(t_torch)
        if step % 50 == 0:  # keep the recorded norms from piling up, as the trainer does per epoch
            trainer_optim.clip.epoch_stats()
    ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    return {
        "pyro_ms": ms["pyro"],
        "trainer_ms": ms["trainer"],
        "torch_ms": ms["torch"],
        "ratio": ms["pyro"] / ms["torch"],
        "trainer_ratio": ms["trainer"] / ms["torch"],
    }


def main(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, threads={args.threads}, "
        f"steps={args.steps}, clock={args.clock}"
    )
    print(
        "| latent | batch | Pyro SVI step (ms) | trainer's step (ms) | PyTorch step (ms) "
        "| ratio | trainer's ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for latent in args.latent:
        result = benchmark(latent, args.batch_size, args.steps, args.warmup, args.seed, args.clock)
        rows.append({"latent": latent, "batch": args.batch_size, **result})
        print(
            f"| {latent} | {args.batch_size} | {result['pyro_ms']:.2f} | {result['trainer_ms']:.2f} "
            f"| {result['torch_ms']:.2f} | {result['ratio']:.2f} | {result['trainer_ratio']:.2f} |"
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--latent", nargs="+", default=["vmf:4,4", "vmf:9", "normal:10"], help="latent specs"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up steps")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="elapsed time, or the process's CPU time (robust on a shared machine, 1 thread only)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

"""Cost of the path-derivative gradients of a Monte Carlo KL against the default ELBO.

Three copies of the same VAE (MLP 784-256-128, Bernoulli likelihood) are trained side by side with
SVI and :class:`pyro_svae.infer.AnnealedELBO`: one with the defaults (``kl="auto"``: the closed-form
KL where one is registered, i.e. without a flow, else the Monte Carlo KL with its total gradient),
one with ``kl="mc", kl_gradient="path"`` and one with ``kl="mc", kl_gradient="base_path"``. Steps
are interleaved on the same minibatches with a fixed thread count; the table reports the median step
times and their ratios to the default. The path gradient needs one extra gradient of log q in its
argument and, with a flow, one structured v^T J^-1 product per flow step
(:mod:`pyro_svae.infer.path_gradient`); the base-only version needs one extra base density.

Run::

    python benchmarks/kl_gradient.py --steps 100 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from pyro.infer import SVI

from pyro_svae.infer import AnnealedELBO
from pyro_svae.models import FlowVAE
from pyro_svae.train.optim import FusedAdam

CASES = ("normal:40", "vmf:40", "normal:40 planar:16", "normal:40 radial:16", "normal:40 nice:16")
ESTIMATORS = {
    "default": {},
    "path": {"kl": "mc", "kl_gradient": "path"},
    "base path": {"kl": "mc", "kl_gradient": "base_path"},
}


def _svi(latent: str, flow: str | None, estimator: str, name: str) -> SVI:
    torch.manual_seed(0)
    vae = FlowVAE(latent, 784, flow=flow, flow_type="amortized", name=name)
    elbo = AnnealedELBO(**ESTIMATORS[estimator])
    return SVI(vae.model, vae.guide, FusedAdam({"lr": 1e-3}), elbo)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def benchmark(case: str, batch_size: int, steps: int, warmup: int) -> dict[str, float]:
    latent, _, flow = case.partition(" ")
    torch.manual_seed(1)
    data = (torch.rand(20 * batch_size, 784) < 0.3).float()
    pyro.clear_param_store()
    svis = {e: _svi(latent, flow or None, e, f"vae_{e}") for e in ESTIMATORS}
    times: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
    for step in range(warmup + steps):
        x = data[(step * batch_size) % len(data) :][:batch_size]
        for estimator, svi in svis.items():
            elapsed = _time(lambda svi=svi, x=x: svi.step(x, num_data=len(data)))
            if step >= warmup:
                times[estimator].append(elapsed)
    return {e: 1e3 * statistics.median(times[e]) for e in ESTIMATORS}


def main(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, threads={args.threads}, steps={args.steps}"
    )
    others = [e for e in ESTIMATORS if e != "default"]
    print(
        "| latent, flow (amortized) | batch | "
        + " | ".join(f"{e} (ms)" for e in ESTIMATORS)
        + " | "
        + " | ".join(f"{e} / default" for e in others)
        + " |"
    )
    print("|---|---:|" + "---:|" * (len(ESTIMATORS) + len(others)))
    rows = []
    for case in args.cases:
        ms = benchmark(case, args.batch_size, args.steps, args.warmup)
        rows.append({"case": case, **{f"{e}_ms": v for e, v in ms.items()}})
        print(
            f"| {case} | {args.batch_size} | "
            + " | ".join(f"{ms[e]:.2f}" for e in ESTIMATORS)
            + " | "
            + " | ".join(f"{ms[e] / ms['default']:.2f}" for e in others)
            + " |"
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=list(CASES), help="'<latent> [<flow>]' strings"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per estimator")
    parser.add_argument("--warmup", type=int, default=10, help="untimed warm-up steps")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

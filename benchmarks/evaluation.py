"""Time the importance-sampled test log-likelihood of the MLP S-VAE, and one training epoch.

The evaluation the papers report, :math:`\\log p(x)` of every static-MNIST test point estimated with 500
importance samples (10000 × 500 decoder passes), is timed for an MLP 784-256-128 S-VAE (default
``vmf:9``, S^9 ⊂ R^10) with :func:`pyro_svae.infer.importance_log_likelihood`, side by side with the
previous implementation (kept below as :func:`reference_importance_log_likelihood`: guide and model traced
together per chunk of 100 samples, every site scored with its ``log_prob``), in one process, interleaved,
with a fixed thread count; the table gives medians over ``--repeats``. The model is briefly trained
(``--train-steps`` SVI steps, so that the concentrations are realistic) or, with ``--train-steps 0``,
randomly initialised.

A repeat on all 10000 points takes about a minute, so repeats use ``--num-points`` test points (a fixed
random subset: the test file is sorted by class) and the table extrapolates linearly to 10000;
``--full`` also times the whole test set once per thread count with the current implementation.
``--epoch`` times one training epoch (500 SVI steps of 100 points, then the validation ELBO on 10000
points) with :class:`pyro_svae.train.Trainer`. ``--ablation`` times the rewrite's changes one at a
time. Wall times on a shared machine depend on its load: the tables also give the CPU seconds of the
process and the load average.

Run from the repository root (``--quick`` is the seconds-long smoke version the test suite runs)::

    python benchmarks/evaluation.py --threads 1 2 --num-points 1000 --repeats 3 --full --epoch
    python benchmarks/evaluation.py --threads 1 --num-points 500 --repeats 3 --ablation
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch

from pyro_svae.data import ImageData, add_data_dir_argument, load_splits
from pyro_svae.infer import AnnealedELBO, importance_log_likelihood
from pyro_svae.models import VAE
from pyro_svae.train import TrainConfig, Trainer
from pyro_svae.train.optim import FusedAdam

TEST_POINTS = 10000
EVAL_BATCH = 500  # the trainer's eval_batch_size


# --------------------------------------------------------------------------------------------------
# the previous implementation, for the side-by-side ratio
# --------------------------------------------------------------------------------------------------


def _reference_per_datapoint(site: dict, num_dims: int, data_dim: int) -> torch.Tensor:
    log_p = site["fn"].log_prob(site["value"])
    while log_p.dim() < num_dims:
        log_p = log_p.unsqueeze(0)
    keep = {0, num_dims + data_dim}
    others = [d for d in range(num_dims) if d not in keep]
    return log_p.sum(others) if others else log_p


@torch.no_grad()
def reference_importance_log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int = 500,
    chunk_size: int = 100,
    max_plate_nesting: int = 2,
) -> torch.Tensor:
    """The implementation before the rewrite: guide + model traced per chunk, ``log_prob`` per site."""
    num_dims = max_plate_nesting + 1
    chunks = []
    remaining = num_samples
    while remaining > 0:
        size = min(chunk_size, remaining)
        remaining -= size
        particles = pyro.plate("_importance_particles", size, dim=-num_dims)
        guide_trace = poutine.trace(particles(guide)).get_trace(x)
        model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(
            x
        )
        data_dim = next(
            frame.dim
            for site in model_trace.nodes.values()
            if site["type"] == "sample"
            for frame in site["cond_indep_stack"]
            if frame.name == "data"
        )
        log_w = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            log_w = log_w + _reference_per_datapoint(site, num_dims, data_dim)
            if not site["is_observed"]:
                log_w = log_w - _reference_per_datapoint(
                    guide_trace.nodes[name], num_dims, data_dim
                )
        chunks.append(log_w)
    return torch.logsumexp(torch.cat(chunks), dim=0) - math.log(num_samples)


# --------------------------------------------------------------------------------------------------


def _model(latent: str, train_steps: int, train: ImageData, seed: int) -> VAE:
    """An MLP 784-256-128 VAE, trained for ``train_steps`` SVI steps on ``train`` (batch 100)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = VAE(latent, train.dim)
    if train_steps:
        svi = pyro.infer.SVI(vae.model, vae.guide, FusedAdam({"lr": 1e-3}), AnnealedELBO())
        g = torch.Generator().manual_seed(seed)
        for _ in range(train_steps):
            idx = torch.randint(len(train), (100,), generator=g)
            svi.step(train.images[idx], num_data=len(train))
    return vae.eval()


def _time_ll(fn, vae: VAE, x: torch.Tensor, samples: int, seed: int) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (this process, all threads) and mean LL of ``fn`` over ``x`` in
    batches of :data:`EVAL_BATCH`."""
    pyro.set_rng_seed(seed)
    start, cpu = time.perf_counter(), time.process_time()
    total = 0.0
    for batch in x.split(EVAL_BATCH):
        total += fn(vae.model, vae.guide, batch, num_samples=samples).sum().item()
    return time.perf_counter() - start, time.process_time() - cpu, total / x.shape[0]


def time_log_likelihood(
    vae: VAE, x: torch.Tensor, samples: int, repeats: int, seed: int
) -> dict[str, float]:
    """Interleaved repeats of ours and the reference (alternating which goes first): medians."""
    impls = {"ours": importance_log_likelihood, "reference": reference_importance_log_likelihood}
    wall: dict[str, list[float]] = {name: [] for name in impls}
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    lls: dict[str, float] = {}
    _time_ll(importance_log_likelihood, vae, x[:EVAL_BATCH], 2, seed)  # warm-up
    for r in range(repeats):
        order = list(impls) if r % 2 == 0 else list(reversed(impls))
        for name in order:
            seconds, cpu_seconds, ll = _time_ll(impls[name], vae, x, samples, seed + r)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
            lls[name] = ll
    result = {"ratio": statistics.median(wall["reference"]) / statistics.median(wall["ours"])}
    for name in impls:
        result[f"{name}_s"] = statistics.median(wall[name])
        result[f"{name}_cpu_s"] = statistics.median(cpu[name])
        result[f"{name}_ll"] = lls[name]
    return result


def ablation(
    vae: VAE, x: torch.Tensor, samples: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Where the speed-up comes from: the reference, then the rewrite with its two changes (model
    passes sized automatically; fused Bernoulli score) switched on one by one; interleaved medians of
    (wall, CPU) seconds."""
    from pyro_svae.infer import evaluation

    fused = evaluation._bernoulli_logits

    def rewrite(chunk_size: int | None, fuse: bool):
        def fn(model, guide, batch, num_samples):
            evaluation._bernoulli_logits = fused if fuse else (lambda fn: None)
            try:
                return importance_log_likelihood(
                    model, guide, batch, num_samples=num_samples, chunk_size=chunk_size
                )
            finally:
                evaluation._bernoulli_logits = fused

        return fn

    variants = {
        "reference: guide + model per chunk of 100 samples, log_prob": (
            reference_importance_log_likelihood
        ),
        "guide once, model per chunk of 100 samples, log_prob": rewrite(100, False),
        "guide once, model per chunk of 100 samples, fused Bernoulli": rewrite(100, True),
        "guide once, automatic model passes, log_prob": rewrite(None, False),
        "guide once, automatic model passes, fused Bernoulli (current)": rewrite(None, True),
    }
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            seconds, cpu_seconds, _ = _time_ll(variants[name], vae, x, samples, r)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    return {
        name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in variants
    }


def time_epoch(
    latent: str,
    data: dict[str, ImageData],
    max_batches: int | None,
    eval_points: int | None,
    seed: int,
) -> dict[str, float]:
    """Seconds of one training epoch (SVI steps) and of its validation ELBO, static MNIST."""
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            dataset="static_mnist",
            latent=latent,
            epochs=1,
            seed=seed,
            out=str(Path(tmp) / "run"),
            max_train_batches=max_batches,
            max_eval_points=eval_points,
            ll_samples=0,
            knn_labels=(),
            progress=False,
        )
        trainer = Trainer(config, datasets=data)
        trainer.run()
        row = trainer.history[0]
        return {
            "steps": trainer.steps_per_epoch,
            "train_s": row["seconds"],
            "val_s": row["val_seconds"],
            "val_points": min(eval_points or TEST_POINTS, len(trainer.data["valid"])),
        }


def main(args: argparse.Namespace) -> dict:
    if args.quick:
        args.num_points, args.samples, args.repeats, args.train_steps = 50, 20, 1, 5
        args.full, args.epoch_batches, args.epoch_eval_points = False, 3, 50
        args.epoch = args.ablation = True
    data = load_splits("static_mnist", ("train", "valid", "test"), root=args.data_dir)
    test = data["test"]
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))
    x_all = test.images[pick]
    x = x_all[: args.num_points]
    scale = TEST_POINTS / x.shape[0]
    print(
        f"# torch {torch.__version__}, pyro {pyro.__version__}; MLP 784-256-128 {args.latent}, "
        f"{args.train_steps} training steps; {x.shape[0]} static-MNIST test points x {args.samples} "
        f"samples, batches of {EVAL_BATCH}; median of {args.repeats} interleaved repeats"
    )
    results: dict = {"ll": {}, "full": {}, "epoch": {}}
    print()
    print(
        "| threads | points | ours (s) | reference (s) | reference / ours | ours CPU (s) "
        f"| reference CPU (s) | ours, extrapolated to {TEST_POINTS} (s) | load avg "
        "| mean LL ours | mean LL reference |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        vae = _model(args.latent, args.train_steps, data["train"], args.seed)
        r = time_log_likelihood(vae, x, args.samples, args.repeats, args.seed)
        results["ll"][threads] = r
        print(
            f"| {threads} | {x.shape[0]} | {r['ours_s']:.2f} | {r['reference_s']:.2f} "
            f"| {r['ratio']:.2f} | {r['ours_cpu_s']:.2f} | {r['reference_cpu_s']:.2f} "
            f"| {r['ours_s'] * scale:.1f} | {os.getloadavg()[0]:.1f} | {r['ours_ll']:.2f} "
            f"| {r['reference_ll']:.2f} |",
            flush=True,
        )
    if args.ablation:
        print()
        what = f"{x.shape[0]} points x {args.samples} samples, {args.threads[0]} thread(s)"
        print(f"| implementation ({what}) | wall (s) | CPU (s) |")
        print("|---|---:|---:|")
        torch.set_num_threads(args.threads[0])
        vae = _model(args.latent, args.train_steps, data["train"], args.seed)
        results["ablation"] = ablation(vae, x, args.samples, args.repeats)
        for name, (seconds, cpu) in results["ablation"].items():
            print(f"| {name} | {seconds:.2f} | {cpu:.2f} |", flush=True)
    if args.full:
        print()
        print(
            "| threads | points x samples | ours, one run (s) | CPU (s) | load avg | mean LL "
            "| under 120 s |"
        )
        print("|---|---|---:|---:|---:|---:|---|")
        for threads in args.threads:
            torch.set_num_threads(threads)
            vae = _model(args.latent, args.train_steps, data["train"], args.seed)
            seconds, cpu, ll = _time_ll(
                importance_log_likelihood, vae, x_all, args.samples, args.seed
            )
            results["full"][threads] = {"seconds": seconds, "cpu_seconds": cpu, "ll": ll}
            print(
                f"| {threads} | {x_all.shape[0]} x {args.samples} | {seconds:.1f} | {cpu:.1f} "
                f"| {os.getloadavg()[0]:.1f} | {ll:.2f} | {'yes' if seconds < 120 else 'no'} |",
                flush=True,
            )
    if args.epoch:
        print()
        print(
            "| threads | latent | SVI steps | epoch training (s) | validation ELBO (s) | load avg |"
        )
        print("|---|---|---:|---:|---:|---:|")
        for threads in args.threads:
            torch.set_num_threads(threads)
            for latent in args.epoch_latents:
                e = time_epoch(latent, data, args.epoch_batches, args.epoch_eval_points, args.seed)
                results["epoch"][(threads, latent)] = e
                print(
                    f"| {threads} | {latent} | {e['steps']} | {e['train_s']:.1f} "
                    f"| {e['val_s']:.1f} ({e['val_points']} points) | {os.getloadavg()[0]:.1f} |",
                    flush=True,
                )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent", default="vmf:9", help="latent spec (default: vmf:9)")
    parser.add_argument(
        "--num-points", type=int, default=1000, help="test points per timed repeat (default: 1000)"
    )
    parser.add_argument(
        "--samples", type=int, default=500, help="importance samples (default: 500)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default: 3)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch threads (default: 1 2)"
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=200,
        help="SVI steps before timing (default: 200; 0: random initialisation)",
    )
    parser.add_argument(
        "--full", action="store_true", help=f"also time all {TEST_POINTS} test points once"
    )
    parser.add_argument("--epoch", action="store_true", help="also time one training epoch")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also time each change of the rewrite on its own (first thread count only)",
    )
    parser.add_argument(
        "--epoch-latents",
        nargs="+",
        default=["vmf:9"],
        help="latent specs for --epoch (default: vmf:9)",
    )
    parser.add_argument(
        "--epoch-batches", type=int, default=None, help="cap the epoch's SVI steps (default: all)"
    )
    parser.add_argument(
        "--epoch-eval-points",
        type=int,
        default=None,
        help="cap the validation points (default: all 10000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke version")
    add_data_dir_argument(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

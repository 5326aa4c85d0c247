"""What the example scripts share: their common flags, a results table over runs, and the run's plots."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyro_svae.data import add_data_dir_argument

from .config import TrainConfig
from .evaluation import FACTOR_KL_KEY
from .loop import Trainer

__all__ = [
    "CURVE_KEYS",
    "add_example_arguments",
    "example_config",
    "results_table",
    "run_with_plots",
    "save_run_plots",
]


def add_example_arguments(
    parser: argparse.ArgumentParser,
    *,
    dataset: str = "dynamic_mnist",
    epochs: int = 5,
    eval_points: int | None = 2000,
    out: str = "runs/examples",
) -> None:
    """Flags every example takes, with the example's own defaults (sized for a few minutes on 2 CPU cores)."""
    parser.add_argument(
        "--dataset", default=dataset, help=f"benchmark dataset (default: {dataset})"
    )
    parser.add_argument(
        "--epochs", type=int, default=epochs, help=f"training epochs (default: {epochs})"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size (default: 100)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    parser.add_argument(
        "--ll-samples",
        type=int,
        default=500,
        help="importance samples for the test LL (default: 500)",
    )
    parser.add_argument(
        "--eval-points",
        type=int,
        default=eval_points,
        help=f"points of each evaluation: the per-epoch validation ELBO (early stopping), the test "
        f"metrics and k-NN (default: {eval_points}; the papers use all 10000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (default: cpu)")
    parser.add_argument("--out", default=out, help=f"folder for runs and plots (default: {out})")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny budget (a few batches) to check that everything runs",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_data_dir_argument(parser)


def example_config(
    args: argparse.Namespace, latent: str, name: str, **overrides: Any
) -> TrainConfig:
    """A :class:`TrainConfig` for one run of an example, in ``<out>/<name>`` (overwritten if present)."""
    settings: dict[str, Any] = {
        "dataset": args.dataset,
        "latent": latent,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ll_samples": args.ll_samples,
        "max_eval_points": args.eval_points,
        "seed": args.seed,
        "threads": args.threads,
        "device": args.device,
        "data_dir": args.data_dir,
        "out": str(Path(args.out) / name),
        "overwrite": True,
        "progress": not args.no_progress,
    }
    if args.smoke:
        settings.update(
            epochs=1,
            max_train_batches=3,
            max_eval_points=40,
            ll_samples=min(args.ll_samples, 10),
            knn_labels=(20,),
        )
    settings.update(overrides)
    return TrainConfig(**settings)


#: metrics of ``metrics.jsonl`` drawn by :func:`save_run_plots`
CURVE_KEYS = ("train_loss", "val_elbo", "train_kl", "val_kl")


def save_run_plots(trainer: Trainer, num_images: int = 64, **kwargs: Any) -> dict[str, Path]:
    """After ``trainer.run()``: every plot that applies to its latent space, on its test split, in
    its run folder (see :func:`pyro_svae.viz.save_all_plots`, which takes ``kwargs``); latent plots
    show at most ``max_eval_points`` (and 1000) test points. With several sphere factors the
    training curves get one more panel: the validation KL of each factor."""
    from pyro_svae.viz import save_all_plots

    last = trainer.history[-1] if trainer.history else {}
    factor_keys = [key for key in last if key.startswith(FACTOR_KL_KEY)]
    kwargs.setdefault("curve_keys", [*CURVE_KEYS, *([factor_keys] if factor_keys else [])])
    kwargs.setdefault("seed", trainer.config.seed)
    kwargs.setdefault("num_points", min(1000, trainer.config.max_eval_points or 1000))
    return save_all_plots(
        trainer.vae,
        trainer.data["test"],
        trainer.paths.root,
        metrics_path=trainer.paths.metrics_jsonl,
        num_images=num_images,
        **kwargs,
    )


def run_with_plots(config: TrainConfig, num_images: int = 64) -> dict[str, Any]:
    """Train one configuration, then save its plots (:func:`save_run_plots`) in its run folder."""
    trainer = Trainer(config)
    summary = trainer.run()
    plots = save_run_plots(trainer, num_images)
    summary["plots"] = {key: str(path) for key, path in plots.items()}
    return summary


def results_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table of test LL, ELBO, RE, KL and k-NN accuracies, one row per named run."""

    def num(value: float | None, digits: int = 2) -> str:
        return (
            "n/a"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{value:.{digits}f}"
        )

    knn_sizes = sorted({int(n) for s in summaries.values() for n in (s.get("knn") or {})})
    header = [
        "model",
        "latent space",
        "LL",
        "ELBO",
        "RE",
        "KL",
        *(f"k-NN {n}" for n in knn_sizes),
        "epochs",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, summary in summaries.items():
        test, knn = summary["test"], {int(k): v for k, v in (summary.get("knn") or {}).items()}
        cells = [
            name,
            summary["latent_space"],
            num(test["ll"]),
            num(test["elbo"]),
            num(test["reconstruction"]),
            num(test["kl"]),
            *(num(knn.get(n), 3) for n in knn_sizes),
            str(summary["epochs_trained"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

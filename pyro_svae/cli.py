"""Command line: ``python -m pyro_svae train ...`` (installed as ``pyro-svae``).

Examples::

    pyro-svae train --dataset dynamic_mnist --latent vmf:4,4 --epochs 100 --out runs/vmf44
    pyro-svae train --latent vmf --zd 4 4 ...           # the seed code's list style, same run
    pyro-svae train --out runs/vmf44 --resume           # continue an interrupted run
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_svae.data import DATASETS, add_data_dir_argument
from pyro_svae.latent_spec import FAMILY_ALIASES

if TYPE_CHECKING:
    from pyro_svae.train import TrainConfig

__all__ = ["build_parser", "config_from_args", "latent_from_args", "main"]

_DEFAULTS: dict[str, Any] = {}


def _defaults() -> dict[str, Any]:
    """``TrainConfig``'s defaults, for the help texts."""
    if not _DEFAULTS:
        from pyro_svae.train.config import TrainConfig

        _DEFAULTS.update({f.name: f.default for f in fields(TrainConfig)})
    return _DEFAULTS


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = _defaults()
    S = argparse.SUPPRESS  # an unset flag keeps the default (or, with --resume, the run's value)

    model = parser.add_argument_group("model")
    model.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default=S,
        help=f"benchmark dataset (default: {d['dataset']})",
    )
    model.add_argument(
        "--latent",
        nargs="+",
        metavar="SPEC",
        default=S,
        help=(
            "latent space as a spec, dimensions being MANIFOLD dimensions: 'vmf:9' (S^9 in R^10), "
            "'vmf:4,4' (S^4 x S^4, a product of spheres), 'ps:2,2,2' (Power Spherical), "
            "'normal:10' (Gaussian VAE), 'vmf:4+normal:2' (mixed). Families: "
            f"{', '.join(FAMILY_ALIASES)}. Also written 'vmf 4 4', or as the seed code did "
            f"with --zd: '--latent vmf --zd 4 4' (default: {d['latent']})"
        ),
    )
    model.add_argument(
        "-zd",
        "--zd",
        "--z-dim",
        dest="zd",
        nargs="+",
        type=_positive_int,
        metavar="D",
        default=S,
        help=(
            "seed-code style latent dimensions, one per sphere factor, with a bare --latent "
            "family: '--latent vmf --zd 4 4' is 'vmf:4,4'"
        ),
    )
    model.add_argument(
        "--hidden",
        nargs="+",
        type=_positive_int,
        metavar="N",
        default=S,
        help=f"encoder hidden layer sizes; the decoder mirrors them (default: {' '.join(map(str, d['hidden']))})",
    )
    model.add_argument(
        "--arch", choices=("mlp", "conv"), default=S, help=f"network type (default: {d['arch']})"
    )
    model.add_argument(
        "--likelihood",
        choices=("bernoulli", "discretized_logistic", "gaussian"),
        default=S,
        help="observation model (default: from the dataset: bernoulli for binary data, "
        "discretized_logistic, a probability mass over the 256 grey levels, for grey data)",
    )
    model.add_argument(
        "--min-concentration",
        type=float,
        metavar="KAPPA",
        default=S,
        help=f"floor of the vMF / Power Spherical concentration (default: {d['min_concentration']})",
    )
    model.add_argument(
        "--covariance",
        choices=("diag", "full"),
        default=S,
        help=f"covariance of Gaussian posteriors (default: {d['covariance']})",
    )
    model.add_argument(
        "--flow",
        default=S,
        metavar="SPEC",
        help="normalizing flow on the posterior: 'planar:16', 'radial:8', 'householder:4', 'nice:4' "
        "(Gaussian factors), 'mobius:2', 'mobiusmix:2', 'householder:2' (sphere factors), "
        "joined with '+' (default: none)",
    )
    model.add_argument(
        "--flow-type",
        choices=("static", "amortized"),
        default=S,
        help="static: flow parameters shared by all data points; amortized: produced by the encoder "
        "for each data point (default: static)",
    )
    model.add_argument(
        "--mixture-components",
        type=_positive_int,
        default=S,
        metavar="K",
        help=f"Möbius dilations in each 'mobiusmix' flow step (default: {d['mixture_components']})",
    )
    model.add_argument(
        "--planar-min-det",
        type=float,
        default=S,
        metavar="DELTA",
        help="keep the Jacobian determinant of every planar step above DELTA, in [0, 1) "
        "(default: 0, Pyro's planar step, whose determinant can come arbitrarily close to 0)",
    )
    model.add_argument(
        "--diffusion-steps",
        type=_positive_int,
        default=S,
        metavar="L",
        help="diffusion posteriors: sample with the ΔVAE random walk of L steps instead of the exact "
        "sampler (default: exact)",
    )

    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        default=S,
        help=f"maximum number of epochs (default: {d['epochs']})",
    )
    opt.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        default=S,
        help=f"minibatch size (default: {d['batch_size']})",
    )
    opt.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        default=S,
        help=f"Adam learning rate (default: {d['lr']:g})",
    )
    opt.add_argument(
        "--beta",
        type=float,
        metavar="BETA",
        default=S,
        help=f"weight of the KL term, beta-VAE (default: {d['beta']:g})",
    )
    opt.add_argument(
        "--kl-warmup",
        type=float,
        metavar="EPOCHS",
        default=S,
        help="epochs of linear KL warm-up from weight 0 to beta (default: 0, no warm-up)",
    )
    opt.add_argument(
        "--kl",
        choices=("auto", "analytic", "mc"),
        default=S,
        help=(
            "KL term of the ELBO: 'auto' (closed form where one is registered, else Monte Carlo), "
            f"'analytic' (closed form or an error) or 'mc' (always Monte Carlo) (default: {d['kl']})"
        ),
    )
    opt.add_argument(
        "--kl-gradient",
        choices=("total", "path", "base_path"),
        default=S,
        help=(
            "gradient of a Monte Carlo KL (flows without a closed form, or every site with --kl mc): "
            "'total'; 'path', the path derivative only (Roeder et al. 2017): unbiased, zero where "
            "the posterior equals the prior, less noisy in our d = 40 runs, but heavy-tailed on "
            "planar flows; or 'base_path', the path derivative for a flow's base distribution and "
            "the total gradient for the flow's parameters ('path' without a flow). '--kl mc "
            f"--kl-gradient path' applies it to every latent site (default: {d['kl_gradient']})"
        ),
    )
    opt.add_argument(
        "--capacity",
        nargs=3,
        type=float,
        metavar=("C_MIN", "C_MAX", "EPOCHS"),
        default=S,
        help=(
            "capacity annealing (Burgess et al. 2018): the KL term becomes beta*|KL - C| with C "
            "rising from C_MIN to C_MAX nats per data point over EPOCHS epochs (default: off)"
        ),
    )
    opt.add_argument(
        "--grad-clip",
        type=float,
        metavar="FACTOR",
        default=S,
        help=(
            "clip the global gradient norm of each step at FACTOR times the median norm of the "
            "previous --grad-clip-window steps, e.g. 5 (default: no clipping; the metrics log "
            "each epoch's median and largest norm either way)"
        ),
    )
    opt.add_argument(
        "--grad-clip-window",
        type=int,
        metavar="STEPS",
        default=S,
        help=f"steps whose median norm sets the clipping threshold (default: {d['grad_clip_window']})",
    )
    opt.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=S,
        help=f"seed of every random number generator (default: {d['seed']})",
    )
    opt.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        default=S,
        help=(
            "non-finite losses recovered from (restore the last good state, lower the learning "
            f"rate) before giving up (default: {d['max_retries']})"
        ),
    )
    opt.add_argument(
        "--lr-decay",
        type=float,
        metavar="FACTOR",
        default=S,
        help=f"learning-rate factor applied at each such recovery (default: {d['lr_decay']})",
    )

    stop = parser.add_argument_group("early stopping and evaluation")
    stop.add_argument(
        "--burn-in",
        dest="early_stopping_burn_in",
        type=int,
        metavar="EPOCHS",
        default=S,
        help=f"epochs before early stopping starts counting (default: {d['early_stopping_burn_in']})",
    )
    stop.add_argument(
        "--look-ahead",
        type=int,
        metavar="EPOCHS",
        default=S,
        help=(
            "stop after this many epochs (after burn-in) without a better validation ELBO; the "
            f"best model is kept. 0 turns early stopping off (default: {d['look_ahead']})"
        ),
    )
    stop.add_argument(
        "--ll-samples",
        type=int,
        metavar="N",
        default=S,
        help=(
            "importance samples for the test log-likelihood; 0 skips it "
            f"(default: {d['ll_samples']})"
        ),
    )
    stop.add_argument(
        "--eval-batch-size",
        type=int,
        metavar="N",
        default=S,
        help=f"batch size of validation and test evaluation (default: {d['eval_batch_size']})",
    )
    stop.add_argument(
        "--knn-labels",
        nargs="*",
        type=_positive_int,
        metavar="N",
        default=S,
        help=(
            "numbers of labelled training points for the 5-NN test accuracy on posterior "
            "features; no value skips k-NN (default: "
            f"{' '.join(map(str, d['knn_labels']))})"
        ),
    )
    stop.add_argument(
        "--max-train-batches",
        type=int,
        metavar="N",
        default=S,
        help="cap on minibatches per epoch, for smoke runs (default: all)",
    )
    stop.add_argument(
        "--max-eval-points",
        type=int,
        metavar="N",
        default=S,
        help="cap on the points of each evaluation (validation, test, k-NN), for smoke runs (default: all)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--device",
        default=S,
        help=f"'cpu', 'cuda' or 'cuda:<index>' (default: {d['device']})",
    )
    run.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        default=S,
        help=(
            "CPU threads for torch (default: torch's choice); 1 is often much faster on a machine "
            "shared with other jobs"
        ),
    )
    run.add_argument(
        "--distributed",
        action="store_true",
        default=S,
        help=(
            "data-parallel training in every process of a torchrun launch (implied under "
            "torchrun): each process trains on batch-size / processes points of every batch, "
            "gradients are averaged, rank 0 writes the files; gloo on CPU, nccl with --device "
            "cuda (cuda:LOCAL_RANK). E.g. 'torchrun --nproc_per_node 2 -m pyro_svae train ...'"
        ),
    )
    add_data_dir_argument(run).default = S
    run.add_argument(
        "--out",
        type=Path,
        default=S,
        metavar="DIR",
        help=(
            "run folder for checkpoint.pt, best.pt, metrics.jsonl/.csv, config.json and "
            "summary.json (default: runs/<dataset>-<latent>-seed<seed>)"
        ),
    )
    run.add_argument(
        "--resume",
        action="store_true",
        default=S,
        help=(
            "continue the run in --out from its checkpoint, to the same result as an "
            "uninterrupted run; unset flags take the run's values, and changing a setting that "
            "alters training is refused (--epochs, --look-ahead, evaluation flags may change)"
        ),
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        default=S,
        help="start over in an --out folder that already holds a run",
    )
    run.add_argument(
        "--plots",
        action="store_true",
        default=S,
        help=(
            "after training, write plots into the run folder: prior samples, reconstructions, "
            "latent interpolations, training curves and, for S^2 factors, Hammer projections, 3-D "
            "scatters and a rotating GIF, for S^1 factors circle plots (see pyro_svae.viz)"
        ),
    )
    run.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=S,
        help="no progress bar (epoch lines are still logged)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-svae`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="pyro-svae",
        description="Hyperspherical variational autoencoders in Pyro.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help="train a VAE and evaluate it (LL, ELBO, RE, KL, k-NN)",
        description=(
            "Train a VAE with SVI (Adam), validate every epoch, stop early, keep the best model, "
            "then report test LL, ELBO, reconstruction (RE), KL and k-NN accuracy. Checkpoints "
            "are written every epoch; --resume continues an interrupted run."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  pyro-svae train --latent vmf:4,4 --epochs 100 --out runs/vmf44\n"
            "  pyro-svae train --latent normal:10 --kl-warmup 100 --look-ahead 50\n"
            "  pyro-svae train --latent vmf --zd 4 4      # same space as vmf:4,4\n"
            "  pyro-svae train --latent vmf:2,1 --plots   # + Hammer, 3-D, GIF and circle plots\n"
            "  pyro-svae train --out runs/vmf44 --resume  # after an interruption"
        ),
    )
    _add_train_arguments(train)
    return parser


def latent_from_args(latent: Sequence[str] | None, zd: Sequence[int] | None) -> str | None:
    """The latent spec string from ``--latent`` tokens and ``--zd`` dimensions (``None`` if neither).

    ``["vmf:4,4"]`` → ``"vmf:4,4"``; ``["vmf", "4", "4"]`` or ``["vmf"]`` with ``zd=[4, 4]`` →
    ``"vmf:4,4"``; ``["vmf:4", "normal:2"]`` → ``"vmf:4+normal:2"``.
    """
    if zd is not None:
        family = latent[0] if latent else _defaults()["latent"].partition(":")[0]
        if latent is not None and (len(latent) != 1 or ":" in family):
            raise ValueError(
                "--zd needs a bare family with --latent (e.g. '--latent vmf --zd 4 4'), "
                f"got --latent {' '.join(latent)}"
            )
        return f"{family}:{','.join(map(str, zd))}"
    if latent is None:
        return None
    if ":" in latent[0]:
        return "+".join(latent)
    if len(latent) == 1:
        raise ValueError(
            f"--latent {latent[0]} has no dimension: write e.g. '--latent {latent[0]}:9', "
            f"'--latent {latent[0]} 9' or '--latent {latent[0]} --zd 9'"
        )
    return f"{latent[0]}:{','.join(latent[1:])}"


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`~pyro_svae.train.TrainConfig` from parsed ``train`` arguments.

    With ``--resume`` and an existing checkpoint, flags not given keep the run's values.
    """
    from pyro_svae.train import TrainConfig, load_checkpoint
    from pyro_svae.train.distributed import launched_by_torchrun

    skip = ("command", "latent", "zd", "plots")  # plots: what to do after training, not config
    given = {k: v for k, v in vars(args).items() if k not in skip}
    spec = latent_from_args(getattr(args, "latent", None), getattr(args, "zd", None))
    if spec is not None:
        given["latent"] = spec
    for key in ("out", "data_dir"):
        if given.get(key) is not None:
            given[key] = str(given[key])
    base: dict[str, Any] = {}
    if given.get("resume"):
        probe = TrainConfig(**{k: v for k, v in given.items() if k != "resume"})
        checkpoint = probe.run_dir / "checkpoint.pt"
        if checkpoint.exists():
            # from_dict: fields the checkpoint predates take the values they had then
            base = TrainConfig.from_dict(load_checkpoint(checkpoint)["config"]).to_dict()
            base.update(resume=False, overwrite=False, out=str(probe.run_dir))
            base.pop("progress")  # presentation: this invocation's choice
            base.pop("distributed", None)  # how this invocation was launched
    if "distributed" not in given and launched_by_torchrun():
        given["distributed"] = True  # one of torchrun's processes: train data-parallel
    return TrainConfig(**{**base, **given})


def _format_results(summary: dict[str, Any]) -> str:
    test = summary["test"]

    def num(value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{value:.3f}"

    ll_note = f"({test['ll_samples']} importance samples)" if test["ll_samples"] else "(skipped)"
    lines = [
        f"test results per data point ({summary['data']['test_points_evaluated']} points; best "
        f"epoch {summary['best_epoch']} of {summary['epochs_trained']}"
        f"{', stopped early' if summary['stopped_early'] else ''}):",
        f"  LL     {num(test['ll']):>10}  {ll_note}",
        f"  ELBO   {num(test['elbo']):>10}",
        f"  RE     {num(test['reconstruction']):>10}  (E_q log p(x|z))",
        f"  KL     {num(test['kl']):>10}",
    ]
    spheres = [
        f"{e['group']}: {', '.join(f'{kl:.2f}' for kl in e['kl'])}"
        for e in summary.get("kl_per_factor") or []
        if e["family"] != "normal" and e["kl"] is not None
    ]
    if spheres:
        lines.append(f"  KL per sphere factor  {'; '.join(spheres)}")
    if summary["knn"]:
        knn = "  ".join(f"{n}: {acc:.3f}" for n, acc in summary["knn"].items())
        lines.append(f"  k-NN   {knn}  (labelled points: accuracy)")
    lines.append("files:")
    lines.extend(
        f"  {name:<13} {path}" for name, path in summary["files"].items() if Path(path).exists()
    )
    return "\n".join(lines)


def _run_train(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"pyro-svae train: error: {err}", file=sys.stderr)
        return 2
    from pyro_svae.data import DatasetCorruptError, DatasetNotFoundError
    from pyro_svae.train import Trainer, TrainingDivergedError

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("pyro_svae.train")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    trainer = None
    try:
        trainer = Trainer(config)
        summary = trainer.run()
    except (
        ValueError,
        FileExistsError,
        FileNotFoundError,
        DatasetNotFoundError,
        DatasetCorruptError,
    ) as err:
        print(f"pyro-svae train: error: {err}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"pyro-svae train: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    finally:
        log.removeHandler(handler)
        if trainer is not None:
            trainer.close()
    if not trainer.is_main:  # distributed: rank 0 plots and reports
        return 0
    plot_error = None
    if getattr(args, "plots", False):
        from pyro_svae.train.report import save_run_plots

        try:
            summary["files"].update(save_run_plots(trainer))
        except (ValueError, OSError) as err:
            plot_error = err
    print(_format_results(summary))
    if plot_error is not None:
        print(f"pyro-svae train: error writing the plots: {plot_error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pyro-svae`` / ``python -m pyro_svae``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "train":
        return _run_train(args)
    raise AssertionError(args.command)  # pragma: no cover

"""The Gaussian VAE baseline (N-VAE) next to an S-VAE with as many latent degrees of freedom.

Trains a VAE with a diagonal (or, with ``--covariance full``, full-covariance) Gaussian posterior and a
standard normal prior, the baseline of the S-VAE paper's Table 1, and optionally (``--compare``) the
S-VAE on S^dim ⊂ R^(dim+1) (as the paper's reference code pairs them: a d-dimensional Gaussian
latent with a vMF of mean direction in R^(d+1)), then prints both rows of the table.

References:

1. D. P. Kingma, M. Welling (2014), "Auto-Encoding Variational Bayes", ICLR.
2. T. R. Davidson et al. (2018), "Hyperspherical Variational Auto-Encoders", UAI (Table 1).
"""

from __future__ import annotations

import argparse

from pyro_svae.train.report import (
    add_example_arguments,
    example_config,
    results_table,
    run_with_plots,
)


def main(args: argparse.Namespace) -> dict:
    runs = {f"N-VAE ({args.covariance})": f"normal:{args.dim}"}
    if args.compare:
        runs["S-VAE"] = f"vmf:{args.dim}"
    summaries = {
        name: run_with_plots(
            example_config(args, latent, latent.replace(":", "_"), covariance=args.covariance)
        )
        for name, latent in runs.items()
    }
    print(results_table(summaries))
    return summaries


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dim",
        type=int,
        default=10,
        help="Gaussian latent dimension d; the S-VAE is on S^d (default: 10)",
    )
    parser.add_argument(
        "--covariance", choices=("diag", "full"), default="diag", help="posterior covariance"
    )
    parser.add_argument("--compare", action="store_true", help="also train the S-VAE on S^dim")
    add_example_arguments(parser, out="runs/gaussian_vae")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

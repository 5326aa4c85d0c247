"""A Power Spherical VAE next to the von Mises-Fisher VAE on the same sphere.

The Power Spherical distribution needs neither rejection sampling nor Bessel functions: its cosine is a
Beta variate. This example trains the same VAE with a Power Spherical and (``--compare``) a vMF posterior.

References:

1. N. De Cao, W. Aziz (2020), "The Power Spherical distribution", ICML INNF+ workshop.
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
    runs = {"Power Spherical": f"ps:{args.manifold_dim}"}
    if args.compare:
        runs["von Mises-Fisher"] = f"vmf:{args.manifold_dim}"
    summaries = {
        name: run_with_plots(example_config(args, latent, latent.replace(":", "_")))
        for name, latent in runs.items()
    }
    print(results_table(summaries))
    return summaries


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--manifold-dim", type=int, default=9, help="sphere S^d to use (default: 9)"
    )
    parser.add_argument("--compare", action="store_true", help="also train the vMF VAE")
    add_example_arguments(parser, out="runs/power_spherical_vae")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())

"""Variance of the ELBO's gradient under each KL estimator, at a trained run's parameters
(docs/results.md, "The path-derivative KL gradient").

For each ``best.pt`` (or ``checkpoint.pt``) given: one fixed minibatch of 100 training images
(dynamic MNIST, binarized once with a fixed seed), and ``--draws`` independent latent draws. For every
draw the gradient of the loss (the negative ELBO per data point) is taken with respect to the encoder
side (encoder, posterior heads and flow hypernets; the decoder's gradient does not depend on the KL
estimator) under each estimator:

- ``closed form``: the registered KL (only where one exists),
- ``MC, total``: the one-sample Monte Carlo KL log q(z) - log p(z) with its total gradient,
- ``MC, path``: the same value with the path-derivative gradient (``kl_gradient="path"``),
- ``MC, base path`` (flows only): ``kl_gradient="base_path"``, the path derivative for the base
  distribution's parameters and the total gradient for the flow's (unbiased; it needs no inverse
  Jacobian, so the rare near-singular planar steps of ``planar_conditioning.py`` do not reach it).

Every estimator sees the same latent draws (the same seed per draw), so the columns differ only by
the estimator. Printed per estimator: the total variance (trace of the gradient's covariance over
draws), its ratio to the first estimator's, and, over all parameters, the largest difference between
its mean gradient and the first estimator's in standard errors of that difference, computed as if the
two means were independent: a coarse check that they estimate the same gradient (the unbiasedness
tests are in ``tests/infer/test_path_kl.py``). The SE ignores the positive correlation that the shared
draws give the two means, so it is too large and the check is weak. The paired SE would be the
sharper check but is the wrong one here: where two estimators agree analytically (the vMF's Monte
Carlo KL has no gradient in the mean direction, and neither has the closed form), their difference
is float rounding, tiny but not zero-mean, and its paired t is large. Last, the median and the largest
norm of the per-draw gradient: a heavy tail (rare, very large gradients) shows in their ratio.

    python benchmarks/results/experiments/flows_kl/gradient_variance.py RUN/best.pt [...] [--draws 200]
"""

import argparse
import sys
import warnings
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active_units import fixed_training_images, load_model

from pyro_svae.infer import AnnealedELBO

BATCH = 100


def gradients(vae, x: torch.Tensor, elbo: AnnealedELBO, draws: int) -> torch.Tensor:
    """``draws × P`` gradients of the per-point loss over the encoder-side parameters."""
    params = [p for name, p in vae.named_parameters() if not name.startswith("decoder")]
    rows = []
    for draw in range(draws):
        pyro.set_rng_seed(1000 + draw)
        loss = elbo.differentiable_loss(vae.model, vae.guide, x) / len(x)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).flatten()
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    return torch.stack(rows)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="kl_gradient='path' on site")  # the planar warning
    train, x = fixed_training_images(BATCH)
    print(
        f"{BATCH} training images, {args.draws} draws; encoder-side gradient of the loss per data point"
    )
    print(
        "run | epoch | estimator | total variance | ratio | max shift (SE) | gradient norm: median "
        "| max | parameters"
    )
    for path in args.runs:
        vae, epoch = load_model(path, train)
        estimators = {
            "closed form": AnnealedELBO(kl="analytic", max_plate_nesting=vae.max_plate_nesting),
            "MC, total": AnnealedELBO(kl="mc", max_plate_nesting=vae.max_plate_nesting),
            "MC, path": AnnealedELBO(
                kl="mc", kl_gradient="path", max_plate_nesting=vae.max_plate_nesting
            ),
        }
        if vae.flows:
            estimators["MC, base path"] = AnnealedELBO(
                kl="mc", kl_gradient="base_path", max_plate_nesting=vae.max_plate_nesting
            )
        first = None
        for name, elbo in estimators.items():
            try:
                g = gradients(vae, x, elbo, args.draws)
            except NotImplementedError:  # no closed-form KL (a flow)
                continue
            variance = g.var(0).sum().item()
            if first is None:
                first = (variance, g)
            se = ((g.var(0) + first[1].var(0)) / len(g)).sqrt().clamp_min(1e-30)
            shift = ((g.mean(0) - first[1].mean(0)).abs() / se).max().item()
            norms = g.norm(dim=1)
            print(
                f"{path} | {epoch} | {name} | {variance:.4g} | {variance / first[0]:.3f} | {shift:.2f} | "
                f"{norms.median().item():.4g} | {norms.max().item():.4g} | {g.shape[1]}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="best.pt or checkpoint.pt files")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    main(parser.parse_args())

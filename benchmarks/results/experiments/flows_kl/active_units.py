"""Active latent directions of the d = 40 flow runs (docs/results.md, "Flows at d = 40").

For each ``best.pt`` given, on the 10000 test images of dynamic MNIST (the fixed binarization the
runs are evaluated on):

- base: the number of eigenvalues above 0.01 of Cov_x(E[z_0 | x]), the covariance over images of
  the base posterior's mean (Burda et al.'s active units, counted in the principal directions so
  that a rotation does not change the count), and the number of base dimensions whose KL to
  N(0, 1), averaged over images, is above 0.1 nats.
- flow output: the same eigenvalue count for Cov_x(E[z_K | x]). E[z_K | x] has no closed form, so it
  is estimated twice from two independent sets of 32 draws per image, and the cross-covariance of
  the two estimates (symmetrized) is used: its expectation is Cov_x(E[z_K | x]) without the
  Monte Carlo noise that a single estimate adds to the diagonal.

    python benchmarks/results/experiments/flows_kl/active_units.py RUN/best.pt [RUN/best.pt ...]
"""

import sys

import pyro
import torch

from pyro_svae.data import load_splits
from pyro_svae.models.flow_vae import FlowVAE

THRESHOLD = 0.01  # variance of the posterior mean over images, as in Burda et al. (2016)
DRAWS = 32


def active_directions(cov: torch.Tensor) -> int:
    return int((torch.linalg.eigvalsh(cov) > THRESHOLD).sum())


def cross_covariance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(0), b - b.mean(0)
    c = a.T @ b / (len(a) - 1)
    return (c + c.T) / 2


def fixed_training_images(count: int):
    """The dynamic-MNIST training split and its first ``count`` images of a fixed permutation,
    binarized once with a fixed seed (the same images for every script that asks for as many)."""
    train = load_splits("dynamic_mnist", ("train",))["train"]
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(len(train), generator=generator)[:count]
    return train, train.draw(index, generator=generator).reshape(count, -1)


def load_model(path: str, data) -> tuple[FlowVAE, int]:
    state = torch.load(path, weights_only=False)
    c = state["config"]
    vae = FlowVAE(
        c["latent"],
        data.dim,
        hidden=c["hidden"],
        arch=c["arch"],
        image_shape=data.image_shape,
        likelihood="bernoulli",
        min_concentration=c["min_concentration"],
        covariance=c["covariance"],
        diffusion_steps=c["diffusion_steps"],
        flow=c["flow"],
        flow_type=c["flow_type"],
        mixture_components=c["mixture_components"],
        planar_min_det=c.get("planar_min_det", 0.0),
    )
    vae.load_state_dict(state["model"])
    return vae.eval(), state["epoch"]


@torch.no_grad()
def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    test = load_splits("dynamic_mnist", ("test",))["test"]
    x = test.draw(torch.arange(len(test))).reshape(len(test), -1)
    print(
        "run | epoch | base: active directions, dims with KL > 0.1, base KL | flow output: active directions"
    )
    for path in paths:
        pyro.set_rng_seed(0)
        vae, epoch = load_model(path, test)
        means, kls, flow_means = [], [], []
        for xb in x.split(500):
            q = vae.posteriors(xb)[0]
            base = getattr(q, "base_dist", q)
            m, s = base.mean, base.stddev
            means.append(m)
            kls.append(0.5 * (m**2 + s**2 - 1) - s.log())
            z = q.rsample((2 * DRAWS,))
            flow_means.append(torch.stack([z[:DRAWS].mean(0), z[DRAWS:].mean(0)]))
        means, kl = torch.cat(means), torch.cat(kls).mean(0)
        flow_means = torch.cat(flow_means, 1)
        print(
            f"{path} | {epoch} | {active_directions(torch.cov(means.T))}, {int((kl > 0.1).sum())}, "
            f"{kl.sum():.2f} | {active_directions(cross_covariance(*flow_means))}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])

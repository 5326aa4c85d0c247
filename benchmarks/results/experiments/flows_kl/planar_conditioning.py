"""How close to singular the steps of a trained planar flow are (docs/results.md, "The path-derivative
KL gradient").

A planar step z' = z + û tanh(wᵀz + b) has Jacobian determinant 1 + h'(wᵀz + b) wᵀû with
h' = 1 − tanh², and Pyro's constraint on û keeps wᵀû ≥ −1, so the determinant is ≥ 0 but reaches 0
when wᵀû → −1 and wᵀz + b → 0. The path gradient multiplies by each step's inverse Jacobian, so a
determinant near 0 makes it large. For each ``best.pt`` given, on 5000 training images (dynamic
MNIST, binarized with a fixed seed) and 4 draws per image, this prints quantiles of the smallest
determinant over the flow's steps, per draw, and the fractions of draws below 0.01 and 0.05.

    python benchmarks/results/experiments/flows_kl/planar_conditioning.py RUN/best.pt [...]
"""

import sys
from pathlib import Path

import torch
from pyro.distributions.transforms.planar import ConditionedPlanar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active_units import load_model

from pyro_svae.data import load_splits
from pyro_svae.infer.path_gradient import planar_jacobian_factors

IMAGES = 5000
DRAWS = 4
QUANTILES = (1e-4, 1e-3, 1e-2, 0.5)


def step_determinants(transform: ConditionedPlanar, x: torch.Tensor) -> torch.Tensor:
    """1 + h'(wᵀx + b) wᵀû of one planar step at its inputs ``x``."""
    a, b = planar_jacobian_factors(transform, x)
    return 1 + (a * b).sum(-1)


@torch.no_grad()
def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    train = load_splits("dynamic_mnist", ("train",))["train"]
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(len(train), generator=generator)[:IMAGES]
    x = train.draw(index, generator=generator).reshape(IMAGES, -1)
    print(
        "run | epoch | smallest step determinant per draw: quantiles "
        + ", ".join(f"{q:g}" for q in QUANTILES)
        + " | fraction < 0.01 | fraction < 0.05"
    )
    for path in paths:
        vae, epoch = load_model(path, train)
        torch.manual_seed(0)
        smallest = []
        for xb in x.split(500):
            q = vae.posteriors(xb)[0]
            q.rsample((DRAWS,))  # fills every step's cache with its input
            dets = [step_determinants(t, t._cached_x_y[0]) for t in q.transforms]
            smallest.append(torch.stack(dets, -1).amin(-1).flatten())
        d = torch.cat(smallest)
        quantiles = torch.quantile(d.double(), torch.tensor(QUANTILES, dtype=torch.float64))
        print(
            f"{path} | {epoch} | "
            + ", ".join(f"{v:.2g}" for v in quantiles.tolist())
            + f" | {(d < 0.01).double().mean().item():.3f} | {(d < 0.05).double().mean().item():.3f}"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])

"""How close to singular the steps of a trained planar flow are, and how much they stretch the score
that the path gradient carries (docs/results.md, "The path-derivative KL gradient").

A planar step z' = z + û tanh(wᵀz + b) has the Jacobian J = I + a bᵀ with a = û, b = h'(wᵀz + b) w,
h' = 1 − tanh². Its determinant is 1 + bᵀa (Pyro's constraint on û keeps it ≥ 0), but the
determinant alone does not say how much J⁻¹ stretches: on span{a, b} its largest singular value is
about |a|·|b| / det, so a step with a moderate determinant and a large |û|·|w| can still stretch one
direction a hundredfold. The path gradient carries the score g_k = ∇ log q_k(z_k) = g_{k−1}ᵀ J_k⁻¹
through every step (``pyro_svae.infer.path_gradient``).

For each ``best.pt`` given, on 5000 training images (dynamic MNIST, binarized with a fixed seed) and
``--draws`` draws per image, this prints, over all (image, draw) pairs: quantiles of the smallest
step determinant per pair (low quantiles), of the largest singular value of any step's J⁻¹ per pair
and of the score's amplification |g_K| / |g_0| through the flow (high quantiles); then how many
pairs have a step stretching by more than 10, and over how many distinct images they fall.

    python benchmarks/results/experiments/flows_kl/planar_conditioning.py RUN/best.pt [...] [--draws 40]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active_units import fixed_training_images, load_model

from pyro_svae.infer.path_gradient import _inverse_jacobian_product, planar_jacobian_factors

IMAGES = 5000
CHUNK = 250
STRETCH = 10.0


def largest_singular_value_of_rank_one_update(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """σ_max(I + c dᵀ): on span{c, d} the eigenvalues of MᵀM sum to 2 + 2cᵀd + |c|²|d|² and
    multiply to (1 + cᵀd)²; every other singular value is 1."""
    cd = (c * d).sum(-1)
    trace = 2 + 2 * cd + c.pow(2).sum(-1) * d.pow(2).sum(-1)
    disc = (trace.pow(2) - 4 * (1 + cd).pow(2)).clamp_min(0)
    return ((trace + disc.sqrt()) / 2).sqrt().clamp_min(1.0)


def base_score(q, z: torch.Tensor) -> torch.Tensor:
    """g_0 = ∂ log q_K(z_K) / ∂z_0 along the cached forward pass, as the path gradient takes it;
    ``z`` must have been drawn with ``q.rsample()`` while gradients were on."""
    (g,) = torch.autograd.grad(q.log_prob(z).sum(), q.transforms[0]._cached_x_y[0])
    return g


@torch.no_grad()
def walk_steps(q, g: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Carry the score g_0 through the planar steps at the points cached in ``q``: per step k,
    (|g_k|, det J_k, σ_max(J_k⁻¹), |û|·|v|) with g_k = g_{k−1}ᵀ J_k⁻¹ and J_k = I + û vᵀ."""
    rows = []
    for t in q.transforms:
        point = t._cached_x_y[0]
        u_hat, v = planar_jacobian_factors(t, point)
        det = 1 + (u_hat * v).sum(-1)
        stretch = largest_singular_value_of_rank_one_update(-u_hat / det.unsqueeze(-1), v)
        g = _inverse_jacobian_product(t, point, g)
        rows.append((g.norm(dim=-1), det, stretch, u_hat.norm(dim=-1) * v.norm(dim=-1)))
    return rows


def pair_statistics(vae, xb: torch.Tensor, draws: int) -> tuple[torch.Tensor, ...]:
    """Per (draw, image): smallest step determinant, largest σ_max(J_k⁻¹), |g_K| / |g_0|."""
    with torch.enable_grad():
        q = vae.posteriors(xb)[0]
        g0 = base_score(q, q.rsample((draws,)))  # the draw fills every step's cache
    scores, dets, stretches, _ = zip(*walk_steps(q, g0), strict=True)
    smallest = torch.stack(dets, -1).amin(-1)
    largest = torch.stack(stretches, -1).amax(-1)
    return smallest, largest, scores[-1] / g0.norm(dim=-1)


def quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> str:
    v = torch.quantile(values.double().flatten(), torch.tensor(qs, dtype=torch.float64))
    return ", ".join(f"{x:.3g}" for x in v.tolist())


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    train, x = fixed_training_images(IMAGES)
    low, high = (1e-5, 1e-4, 1e-3, 0.5), (0.5, 1 - 1e-3, 1 - 1e-4, 1 - 1e-5, 1.0)
    print(f"{IMAGES} training images × {args.draws} draws = {IMAGES * args.draws} pairs")
    for path in args.runs:
        vae, epoch = load_model(path, train)
        torch.manual_seed(0)
        rows = [pair_statistics(vae, xb, args.draws) for xb in x.split(CHUNK)]
        smallest, largest, gain = (torch.cat(parts, dim=1) for parts in zip(*rows, strict=True))
        stretched = largest > STRETCH
        images = stretched.any(0).nonzero().flatten()
        print(f"\n## {path} (epoch {epoch})")
        print(f"smallest step determinant per pair, quantiles {low}: {quantiles(smallest, low)}")
        print(f"largest sigma_max(J_k^-1) per pair, quantiles {high}: {quantiles(largest, high)}")
        print(
            f"score amplification |g_K|/|g_0| per pair, quantiles {high}: {quantiles(gain, high)}"
        )
        print(
            f"pairs with a step stretching > {STRETCH:g}: {int(stretched.sum())} "
            f"({stretched.double().mean().item():.2g}), over {len(images)} distinct images"
        )
        if len(images):
            rate = stretched[:, images].double().mean(0)
            print(
                "  per such image, fraction of its draws: "
                + ", ".join(f"{r:.3g}" for r in rate.sort(descending=True).values[:10].tolist())
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="best.pt or checkpoint.pt files of planar runs")
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    main(parser.parse_args())

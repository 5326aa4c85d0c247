"""Draw docs/figures/posteriors.png: the cosine marginal of the sphere posteriors at equal mean resultant length.

For S^2 and S^9 and a few target values of E[mu^T z], the concentration / time of each family is solved so
that its mean resultant length matches, and the density of w = mu^T z is plotted (log scale), which is
where the families differ: the vMF has the heaviest lower tail, the Power Spherical density vanishes at the
antipode (w = -1), and the heat kernel lies in between.

Run: ``python docs/figures/posteriors.py`` (writes the PNG next to this file).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from pyro_svae.distributions import PowerSpherical, SphericalDiffusion, VonMisesFisher
from pyro_svae.ops import log_sphere_area, vmf_mean_resultant

OUT = Path(__file__).with_name("posteriors.png")


def _solve(fn, target: float, lo: float, hi: float) -> float:
    """Bisection in log space for an increasing function fn."""
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if fn(mid) < target else (lo, mid)
    return math.sqrt(lo * hi)


def _log_marginal(d, dim: int, w: torch.Tensor) -> torch.Tensor:
    """log density of w = mu^T z: log p(z) + log |S^{m-2}| + (m-3)/2 log(1 - w^2)."""
    z = torch.zeros(w.shape[0], dim, dtype=torch.float64)
    z[:, 0], z[:, 1] = w, torch.sqrt(1 - w * w)
    return d.log_prob(z) + log_sphere_area(dim - 1) + 0.5 * (dim - 3) * torch.log1p(-w * w)


def main(out: Path = OUT) -> Path:
    fig = Figure(figsize=(9, 6))
    axes = fig.subplots(2, 3, sharey="row")
    w = torch.linspace(-0.999, 0.999, 801, dtype=torch.float64)
    for row, dim in enumerate((3, 10)):
        loc = torch.eye(dim, dtype=torch.float64)[0]
        for col, target in enumerate((0.3, 0.7, 0.95)):
            kappa = _solve(
                lambda k, dim=dim: vmf_mean_resultant(
                    dim, torch.tensor(k, dtype=torch.float64)
                ).item(),
                target,
                1e-6,
                1e6,
            )
            ps = _solve(lambda k, dim=dim: k / (dim - 1 + k), target, 1e-6, 1e8)
            time = -2 * math.log(target) / (dim - 1)
            families = {
                f"vMF κ={kappa:.3g}": VonMisesFisher(loc, kappa),
                f"Power Spherical κ={ps:.3g}": PowerSpherical(loc, ps),
                f"diffusion t={time:.3g}": SphericalDiffusion(
                    loc, torch.tensor(time, dtype=torch.float64)
                ),
            }
            ax = axes[row, col]
            for label, d in families.items():
                ax.plot(w.numpy(), _log_marginal(d, dim, w).numpy(), label=label)
            ax.set_title(f"S^{dim - 1}, E[μᵀz] = {target}")
            ax.set_ylim(-12, None)
            ax.set_xlabel("w = μᵀz")
            ax.legend(fontsize=7)
        axes[row, 0].set_ylabel("log density of w")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main())

"""Where the heavy tail of the planar flow's path gradient comes from (docs/results.md, "The
path-derivative KL gradient").

``gradient_variance.py`` found rare, very large encoder-side gradients under the path gradient on the
amortized planar:16 runs. This script locates them. At a run's saved parameters, on one fixed
minibatch of training images (dynamic MNIST, binarized with a fixed seed) and ``--draws`` latent draws
(the same draws for both estimators), it takes the gradient of the loss with respect to the
*outputs* of the encoder's heads: the base posterior's location and scale and each planar step's
``(b, u, w)`` from its hypernet. These outputs are per image, so one backward pass gives the gradient
per (image, draw) pair, split by where it enters the network. Printed, per estimator (total and path
gradient) and per output group: the median, the 0.999 quantile and the largest norm over the
(image, draw) pairs.

Then, for the (image, draw) pairs with the largest path gradients, the quantities the path gradient
multiplies together: the score ``g_k = d log q_k(z_k) / d z_k`` at each step's output (``g_0`` is the
base score with the log-determinant terms), the largest singular value of each step's inverse
Jacobian ``J_k^{-1}`` (``J_k = I + a b^T``, ``a = û``, ``b = h'(wᵀz + b) w``), and ``|a|·|b|`` and the
determinant ``1 + bᵀa``: a step can be far from singular (determinant near 1) and still stretch
some direction by ``~|a|·|b|``.

    python benchmarks/results/experiments/flows_kl/planar_tail.py RUN/best.pt [...] [--draws 50]
"""

import argparse
import sys
from pathlib import Path

import pyro
import torch
from pyro.distributions.transforms.planar import ConditionedPlanar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active_units import fixed_training_images, load_model
from planar_conditioning import base_score, walk_steps

from pyro_svae.flows.euclidean import LinearHypernet
from pyro_svae.infer import AnnealedELBO

BATCH = 100
TOP = 5


class Outputs:
    """Keeps the first grad-carrying output of the heads and hypernets in one forward pass."""

    def __init__(self, vae):
        self.named = {}
        self.handles = []
        for name, module in vae.named_modules():
            head = name.startswith("heads.") and name.count(".") == 1
            if head or isinstance(module, LinearHypernet):
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, output):
            tensors = output if isinstance(output, tuple) else (output,)
            if name in self.named or not all(t.requires_grad for t in tensors):
                return
            for t in tensors:
                t.retain_grad()
            self.named[name] = tensors

        return hook


def per_pair_gradient_norms(vae, x, elbo, draws):
    """``{output group: draws × BATCH}`` norms of the loss gradient w.r.t. the heads' outputs."""
    result = {}
    for draw in range(draws):
        outputs = Outputs(vae)
        pyro.set_rng_seed(1000 + draw)
        loss = elbo.differentiable_loss(vae.model, vae.guide, x) / len(x)
        loss.backward()
        for h in outputs.handles:
            h.remove()
        for name, tensors in outputs.named.items():
            if isinstance(tensors, tuple) and len(tensors) == 3:  # planar (b, u, w)
                labels = [f"{name} b", f"{name} u", f"{name} w"]
            elif len(tensors) == 2:
                labels = [f"{name} loc", f"{name} scale"]
            else:
                labels = [f"{name}[{i}]" for i in range(len(tensors))]
            for label, t in zip(labels, tensors, strict=True):
                norm = t.grad.reshape(len(x), -1).norm(dim=-1)
                result.setdefault(label, []).append(norm)
        vae.zero_grad(set_to_none=True)
    return {k: torch.stack(v) for k, v in result.items()}


def step_quantities(vae, x, draw):
    """|g_0|, then per step k: (|g_k|, det J_k, σ_max(J_k⁻¹), |û|·|v|) for every image at draw ``draw``."""
    pyro.set_rng_seed(1000 + draw)
    with torch.enable_grad():
        q = vae.posteriors(x)[0]
        g0 = base_score(q, q.rsample())
    return g0.norm(dim=-1), walk_steps(q, g0)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    train, x = fixed_training_images(BATCH)
    for path in args.runs:
        vae, epoch = load_model(path, train)
        assert all(isinstance(t, ConditionedPlanar) for t in vae.posteriors(x[:1])[0].transforms)
        print(f"\n## {path} (epoch {epoch}): {BATCH} images × {args.draws} draws")
        norms = {}
        for name, kl_gradient in (("total", "total"), ("path", "path")):
            elbo = AnnealedELBO(
                kl="mc", kl_gradient=kl_gradient, max_plate_nesting=vae.max_plate_nesting
            )
            norms[name] = per_pair_gradient_norms(vae, x, elbo, args.draws)
        print("output | total: median, q0.999, max | path: median, q0.999, max")
        for label in norms["total"]:
            cells = []
            for name in ("total", "path"):
                v = norms[name][label].flatten().double()
                q999 = torch.quantile(v, 0.999).item()
                cells.append(f"{v.median().item():.3g}, {q999:.3g}, {v.max().item():.3g}")
            print(f"{label} | {cells[0]} | {cells[1]}")
        # the (draw, image) pairs with the largest path gradient over all outputs
        total_path = torch.stack([v.pow(2) for v in norms["path"].values()]).sum(0).sqrt()
        top = torch.topk(total_path.flatten(), TOP).indices
        median_pair = total_path.flatten().median().item()
        print(
            f"\nlargest path gradients per (image, draw) pair; median pair norm {median_pair:.3g}"
        )
        for flat in top.tolist():
            draw, image = divmod(flat, BATCH)
            g0_norm, rows = step_quantities(vae, x, draw)
            worst = {label: norms["path"][label][draw, image].item() for label in norms["path"]}
            label = max(worst, key=worst.get)
            print(
                f"draw {draw} image {image}: norm {total_path[draw, image].item():.3g}, "
                f"largest at {label} ({worst[label]:.3g}; total gradient there "
                f"{norms['total'][label][draw, image].item():.3g})"
            )
            print("  k | |g_k| | sigma_max(J_k^-1) | |u_hat||v| | det J_k")
            print(f"  0 | {g0_norm[image].item():.3g}")
            for k, (gn, det, stretch, uv) in enumerate(rows, start=1):
                print(
                    f"  {k} | {gn[image].item():.3g} | {stretch[image].item():.3g} "
                    f"| {uv[image].item():.3g} | {det[image].item():.3g}"
                )
        # the same step quantities over all pairs of the first draws: how rare are large stretches
        stretch = []
        for draw in range(min(args.draws, 10)):
            _, rows = step_quantities(vae, x, draw)
            stretch.append(torch.stack([s for _, _, s, _ in rows], -1))
        stretch = torch.cat(stretch).double()
        product = stretch.prod(-1)
        print(
            "\nsigma_max(J_k^-1) over images × steps (first 10 draws): median "
            f"{stretch.median().item():.3g}, q0.999 {torch.quantile(stretch.flatten(), 0.999).item():.3g}, "
            f"max {stretch.max().item():.3g}; product over steps per pair: median "
            f"{product.median().item():.3g}, max {product.max().item():.3g}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="best.pt or checkpoint.pt files of planar runs")
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    main(parser.parse_args())

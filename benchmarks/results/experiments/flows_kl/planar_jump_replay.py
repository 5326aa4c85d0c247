"""Continue a planar run from its checkpoint and log every training step, to see what comes before a
jump of the training loss (docs/results.md, "The path-derivative KL gradient").

The run's ``checkpoint.pt`` (model, Adam state, RNG streams) is copied to ``OUT`` and training
continues there for ``--epochs`` more epochs with early stopping off and no final evaluation. Per
optimizer step, ``OUT/steps.csv`` gets: the loss per data point, the norm of the whole gradient (of
the loss scaled to the training set, as SVI takes it) and of its flow-hypernet part, the
largest singular value of any planar step's inverse Jacobian over the minibatch's (image, draw)
pairs, and the largest amplification |g_K| / |g_0| of the score through the flow (see
``planar_conditioning.py``). The minibatch's quantities are taken at the very draw the step trained
on (the guide's posterior is kept when it is built).

    python benchmarks/results/experiments/flows_kl/planar_jump_replay.py \
        runs/experiments/planar_path_kl_full/checkpoint.pt OUT [--epochs 30]
    python benchmarks/results/experiments/flows_kl/planar_jump_replay.py \
        runs/experiments/planar_path_kl_full/checkpoint.pt OUT --epochs 10 --grad-clip 5
    python benchmarks/results/experiments/flows_kl/planar_jump_replay.py --report OUT/steps.csv

``--grad-clip FACTOR`` continues with ``grad_clip=FACTOR`` (the copied checkpoint's configuration is
changed to say so; the norm history starts empty, so nothing is clipped in the first
``grad_clip_window`` steps), and ``steps.csv`` then marks each clipped step (``clipped``; the
logged norm is the one before clipping).

``--report`` reads a ``steps.csv`` (plain or gzipped) and prints every step whose gradient norm is over
``SPIKE`` times the median, with its minibatch's largest stretch and score amplification and the mean
loss over the ``WINDOW`` steps before it and after it; then the same for the steps with the largest
stretches.
"""

import argparse
import csv
import gzip
import shutil
import statistics
import sys
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planar_conditioning import walk_steps

from pyro_svae.train import TrainConfig, Trainer
from pyro_svae.train.optim import FusedAdam

SPIKE = 10.0
WINDOW = 50
FIELDS = ["epoch", "step", "loss", "grad_norm", "flow_grad_norm", "max_stretch", "max_score_gain"]
CLIP_FIELDS = [*FIELDS, "clipped"]


@torch.no_grad()
def minibatch_statistics(q) -> tuple[float, float]:
    """Largest σ_max(J_k⁻¹) and largest |g_K| / |g_0| over the pairs of the draw ``q`` last made."""
    z0 = q.transforms[0]._cached_x_y[0]
    with torch.enable_grad():  # g_0 as the path gradient takes it, on a detached copy of the draw
        leaf = z0.detach().requires_grad_()
        log_q, x = q.base_dist.log_prob(leaf), leaf
        for t in q.transforms:
            y = t._call(x)
            log_q = log_q - t._cached_logDetJ
            x = y
        (g,) = torch.autograd.grad(log_q.sum(), leaf)
    scores, _, stretches, _ = zip(*walk_steps(q, g), strict=True)
    return torch.stack(stretches).max().item(), (scores[-1] / g.norm(dim=-1)).max().item()


def report(path: Path) -> None:
    """The spikes of a ``steps.csv`` and what the loss did around them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    median = {k: statistics.median(r[k] for r in rows) for k in FIELDS[2:]}
    print(
        f"{len(rows)} steps, epochs {int(rows[0]['epoch'])}-{int(rows[-1]['epoch'])}; medians: "
        + ", ".join(f"{k} {v:.4g}" for k, v in median.items())
    )

    def show(title: str, picked: list[int]) -> None:
        print(f"\n{title}")
        print(
            "epoch | step | grad norm / median | flow part / median | max stretch | max score gain "
            f"| mean loss, {WINDOW} steps before | after"
        )
        for i in picked:
            r = rows[i]
            before = [x["loss"] for x in rows[max(0, i - WINDOW) : i]]
            after = [x["loss"] for x in rows[i + 1 : i + 1 + WINDOW]]
            print(
                f"{int(r['epoch'])} | {int(r['step'])} | {r['grad_norm'] / median['grad_norm']:.3g} "
                f"| {r['flow_grad_norm'] / median['flow_grad_norm']:.3g} | {r['max_stretch']:.4g} "
                f"| {r['max_score_gain']:.3g} | {statistics.fmean(before) if before else float('nan'):.2f} "
                f"| {statistics.fmean(after) if after else float('nan'):.2f}"
                + (" | clipped" if r.get("clipped") else "")
            )

    if "clipped" in rows[0]:
        print(f"clipped steps: {sum(int(r['clipped']) for r in rows)}")
    spikes = [i for i, r in enumerate(rows) if r["grad_norm"] > SPIKE * median["grad_norm"]]
    show(f"steps with a gradient norm over {SPIKE:g} times the median: {len(spikes)}", spikes)
    stretched = sorted(range(len(rows)), key=lambda i: -rows[i]["max_stretch"])[:10]
    show("the 10 steps with the largest stretch", sorted(stretched))


def main(args: argparse.Namespace) -> None:
    source = Path(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    for name in ("checkpoint.pt", "config.json", "metrics.csv", "metrics.jsonl", "best.pt"):
        if (source.parent / name).exists():
            shutil.copy2(source.parent / name, out / name)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    if args.grad_clip is not None:  # continue this copy as a run with clipping
        state["config"]["grad_clip"] = args.grad_clip
        torch.save(state, out / "checkpoint.pt")
    config = dict(state["config"])
    config.update(
        out=str(out),
        resume=True,
        epochs=state["epoch"] + args.epochs,
        look_ahead=0,
        ll_samples=0,
        data_dir=None,
        progress=False,
    )
    trainer = Trainer(TrainConfig.from_dict(config))
    trainer._prepare_run_dir()  # loads the checkpoint, as Trainer.run does first
    vae = trainer.vae
    captured = {}
    posteriors = vae.posteriors

    def keep_posterior(x):
        fns = posteriors(x)
        captured["q"] = fns[0]
        return fns

    vae.posteriors = keep_posterior
    optim_call = FusedAdam.__call__
    rows = []

    def logged_step(self, params, *a, **k):
        params = list(params)
        store = pyro.get_param_store()
        grads = [p.grad.flatten() for p in params if p.grad is not None]
        flow_grads = [
            p.grad.flatten()
            for p in params
            if p.grad is not None and "$$$flows." in store.param_name(p)
        ]
        stretch, gain = minibatch_statistics(captured["q"])
        threshold = trainer.clip.threshold()
        grad_norm = torch.cat(grads).norm().item()
        clipped = (
            {}
            if args.grad_clip is None
            else {"clipped": int(grad_norm > float(threshold or 0) > 0)}
        )
        rows.append(
            {
                "epoch": trainer.epoch + 1,
                "step": trainer.elbo.step,
                "loss": trainer.elbo.last_terms.loss / len(trainer.data["train"]),
                "grad_norm": grad_norm,
                "flow_grad_norm": torch.cat(flow_grads).norm().item(),
                "max_stretch": stretch,
                "max_score_gain": gain,
                **clipped,
            }
        )
        return optim_call(self, params, *a, **k)

    FusedAdam.__call__ = logged_step  # also reaches an optimizer remade by NaN recovery
    with open(out / "steps.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FIELDS if args.grad_clip is None else CLIP_FIELDS)
        writer.writeheader()
        for _ in range(args.epochs):
            row = trainer.train_epoch()
            writer.writerows(rows)
            f.flush()
            rows.clear()
            print(
                f"epoch {row['epoch']}: train loss {row['train_loss']:.3f}, "
                f"val ELBO {row['val_elbo']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a planar run's checkpoint.pt")
    parser.add_argument("out", nargs="?", help="a new folder for the continued run")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--grad-clip", type=float, help="continue with this gradient clipping factor (grad_clip)"
    )
    parser.add_argument("--report", type=Path, help="summarise a steps.csv instead of training")
    args = parser.parse_args()
    if args.report is not None:
        report(args.report)
    elif args.checkpoint and args.out:
        main(args)
    else:
        parser.error("give CHECKPOINT and OUT, or --report STEPS_CSV")

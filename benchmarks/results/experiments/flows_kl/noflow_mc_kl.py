"""The flows table's flow-free N-VAE (normal:40, dynamic MNIST, seed 0) trained with the Monte Carlo KL
instead of the closed form, for a capped number of epochs (docs/results.md, "Flows at d = 40").

    python benchmarks/results/experiments/flows_kl/noflow_mc_kl.py 60 runs/noflow_mc_kl
"""

import json
import sys
from pathlib import Path

import pyro_svae.train.loop as loop
from pyro_svae.infer import AnnealedELBO
from pyro_svae.train import TrainConfig, Trainer


class MonteCarloKL(AnnealedELBO):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "kl": "mc"})


loop.AnnealedELBO = MonteCarloKL  # the trainer builds its ELBO from this name
epochs, out = int(sys.argv[1]), sys.argv[2]
root = Path(__file__).resolve().parents[4]
summary = root / "benchmarks/results/full/dynamic_mnist/normal_40/seed0/summary.json"
config = json.loads(summary.read_text(encoding="utf-8"))["config"]
config.update(epochs=epochs, out=out, ll_samples=0, data_dir=None, resume=False)
Trainer(TrainConfig.from_dict(config)).run()

"""The 12-epoch planar initialisation runs of docs/results.md ("Flows at d = 40"), via the CLI.

VARIANT=identity: the hypernet biases of `identity_planar_parameters` (now the library default;
this run drew w0 as randn/sqrt(d), norm about 1). VARIANT=default: the hypernet at PyTorch's default
scale, as in the papers' code. Run as

    VARIANT=identity python planar_init.py train --latent normal:40 --flow planar:16 \
        --flow-type amortized --epochs 12 --seed 0 --threads 1 --no-progress --knn-labels \
        --max-eval-points 500 --ll-samples 10 --out OUT --overwrite
"""

import math
import os
import sys

import pyro.distributions.transforms as T
import torch

from pyro_svae import cli
from pyro_svae.flows import euclidean as E

variant = os.environ["VARIANT"]
orig = E.EuclideanFlow._make


def _make(self, kind, step, context_dim, hidden):
    if kind != "planar" or context_dim is None:
        return orig(self, kind, step, context_dim, hidden)
    d = self.dim
    if variant == "default":
        net = E.LinearHypernet(context_dim, [1, d, d], init_scale=1.0)
    elif variant == "identity":
        net = E.LinearHypernet(context_dim, [1, d, d])
        with torch.no_grad():
            w0 = torch.randn(d) / math.sqrt(d)
            bias = net.linear.bias
            bias[0] = 0.0
            bias[1 : 1 + d] = math.log(math.e - 1) * w0 / w0.pow(2).sum()
            bias[1 + d :] = w0
    else:
        raise SystemExit(variant)
    return T.ConditionalPlanar(net)


E.EuclideanFlow._make = _make
sys.exit(cli.main(sys.argv[1:]))

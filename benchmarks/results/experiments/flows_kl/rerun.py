"""Train a run again from its ``config.json`` (or ``summary.json``) with some settings changed.

    python benchmarks/results/experiments/flows_kl/rerun.py \
        runs/reproduce/full/dynamic_mnist/normal_40_flow_planar_16_amortized/seed0/config.json \
        epochs=60 ll_samples=0 kl_gradient=path out=runs/experiments/planar_path_kl

Each ``key=value`` sets a :class:`~pyro_svae.train.TrainConfig` field; values are read as JSON when
they parse (numbers, ``true``, ``null``, lists), else as strings. ``data_dir`` is reset to the default
(``$PYRO_SVAE_DATA``) unless given. ``kl=mc`` trains with the Monte Carlo KL where a closed form
exists, validation ELBO included.
"""

import json
import sys
from pathlib import Path

from pyro_svae.train import TrainConfig, Trainer


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str]) -> None:
    if not argv or any("=" not in a for a in argv[1:]):
        raise SystemExit(__doc__)
    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    config = config.get("config", config)  # a summary.json holds it under "config"
    config["data_dir"] = None
    for assignment in argv[1:]:
        key, text = assignment.split("=", 1)
        config[key] = _value(text)
    Trainer(TrainConfig.from_dict(config)).run()


if __name__ == "__main__":
    main(sys.argv[1:])

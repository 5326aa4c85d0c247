"""Reset global state between tutorials when sphinx-gallery executes them in one process.

Used only by ``PYRO_SVAE_DOCS_EXECUTE=1`` builds (``reset_modules`` in ``docs/conf.py``): each
tutorial starts, as it does when run as a script, with an empty Pyro parameter store and torch's
float32 default dtype.
"""

from __future__ import annotations

import pyro
import torch


def reset_state(gallery_conf, fname) -> None:
    pyro.clear_param_store()
    torch.set_default_dtype(torch.float32)

"""Test-wide settings: fixed thread count, validation on, and the offline dataset folder."""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import pytest
import torch

_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "PYRO_SVAE_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["PYRO_SVAE_DATA"] = str(_SHARED_DATA)

# pytest-xdist runs one worker per core: one thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _pyro_state():
    """Every test starts with validation on, an empty param store and a fixed seed."""
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()

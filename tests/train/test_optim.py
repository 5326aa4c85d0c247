"""FusedAdam: the same trajectory and state format as pyro.optim.Adam, with one torch optimizer."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_svae.infer import AnnealedELBO
from pyro_svae.models import VAE
from pyro_svae.train.optim import FusedAdam


def _train(optim, steps: int = 15, state=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = (torch.rand(40, 20, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    vae = VAE("vmf:2,2", 20, hidden=(12,))
    if state is not None:
        optim.set_state(state)
    svi = SVI(vae.model, vae.guide, optim, AnnealedELBO())
    for _ in range(steps):
        svi.step(x)
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}, optim.get_state()


def test_matches_pyro_adam_bit_for_bit():
    params_pyro, state_pyro = _train(Adam({"lr": 1e-2}))
    params_fused, state_fused = _train(FusedAdam({"lr": 1e-2}))
    for name, value in params_pyro.items():
        assert torch.equal(value, params_fused[name]), name
    assert sorted(state_pyro) == sorted(state_fused)
    for name in state_pyro:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(
                state_pyro[name]["state"][0][key], state_fused[name]["state"][0][key]
            )
        assert state_fused[name]["param_groups"][0]["lr"] == pytest.approx(1e-2)


def test_state_round_trip_and_learning_rate_change():
    _, state = _train(FusedAdam({"lr": 1e-2}), steps=5)
    for per_param in state.values():
        per_param["param_groups"][0]["lr"] = 5e-3
    fresh = FusedAdam({"lr": 1e-2})
    fresh.set_state(state)
    assert fresh.get_state().keys() == state.keys()  # not consumed yet: returned as given
    _, after = _train(fresh, steps=1, state=None)
    any_name = next(iter(after))
    assert after[any_name]["param_groups"][0]["lr"] == pytest.approx(5e-3)
    # the loaded moments continue under the same parameter names: 5 saved steps + 1 new one
    assert int(after[any_name]["state"][0]["step"]) == 6

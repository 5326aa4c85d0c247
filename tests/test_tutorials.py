"""Every tutorial in ``docs/tutorials`` runs top to bottom in smoke mode (tiny budgets), so none can rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL_DIR = ROOT / "docs" / "tutorials"
TUTORIALS = sorted(p.name for p in TUTORIAL_DIR.glob("tutorial_*.py"))
NAME = re.compile(r"tutorial_(\d\d)_[a-z0-9_]+\.py")


def test_every_tutorial_is_there():
    """The six tutorials of the documentation, numbered 01 to 06, one file each."""
    numbers = []
    for name in TUTORIALS:
        match = NAME.fullmatch(name)
        assert match, f"{name}: tutorials are named tutorial_NN_<lowercase_name>.py"
        numbers.append(match.group(1))
    assert numbers == [f"{i:02d}" for i in range(1, 7)], TUTORIALS


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_has_a_gallery_header(name):
    """sphinx-gallery needs a module docstring whose first lines are an RST title."""
    text = (TUTORIAL_DIR / name).read_text()
    match = re.match(r'\s*r?"""\s*(\S.*)\n([=\-~^#*+]+)\n', text)
    assert match, f"{name} must start with a docstring whose first lines are an RST title"
    title, underline = match.groups()
    assert len(underline) >= len(title.strip()), f"{name}: title underline too short"
    assert "# %%" in text, f"{name}: cells are separated by '# %%' lines"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs_in_smoke_mode(name, tmp_path):
    if not os.environ.get("PYRO_SVAE_DATA"):
        pytest.fail(
            "the tutorials read MNIST: set PYRO_SVAE_DATA (tests/conftest.py does when ../shared/data exists)"
        )
    env = {
        **os.environ,
        "PYRO_SVAE_SMOKE": "1",
        "PYRO_SVAE_OUT": str(tmp_path),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(TUTORIAL_DIR / name)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

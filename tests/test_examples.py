"""Every example script runs end to end with a tiny budget (``--smoke``) and prints its results table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
EXTRA_FLAGS = {
    "mnist_product_vmf.py": ["--compare"],
    "gaussian_vae.py": ["--compare", "--covariance", "full"],
    "power_spherical_vae.py": ["--compare"],
    "flow_vae.py": ["--compare", "--flow-type", "amortized"],
}


def test_every_example_is_covered():
    assert "mnist_product_vmf.py" in EXAMPLES
    assert set(EXTRA_FLAGS) <= set(EXAMPLES)


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(script, tmp_path):
    if not os.environ.get("PYRO_SVAE_DATA"):
        pytest.fail(
            "the examples need the MNIST files: set PYRO_SVAE_DATA (tests/conftest.py does when ../shared/data exists)"
        )
    command = [
        sys.executable,
        str(ROOT / "examples" / script),
        "--smoke",
        "--no-progress",
        "--threads",
        "1",
    ]
    command += ["--out", str(tmp_path), *EXTRA_FLAGS.get(script, [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| model | latent space | LL | ELBO | RE | KL |" in result.stdout
    table_rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| ") and "n/a" not in line.split("|")[3]
    ]
    assert len(table_rows) >= 2  # header + at least one run with a finite LL
    pngs = list(tmp_path.rglob("*.png"))
    assert len(pngs) >= 3
    assert all(p.stat().st_size > 1000 for p in pngs)

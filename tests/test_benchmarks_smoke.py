"""Smoke test of ``benchmarks/distributions.py --quick``: it runs and prints the full table.

No timing is asserted: the benchmark is not a test, this only keeps the script from rotting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "distributions.py"

OPS = ("rsample", "rsample+backward", "log_prob", "KL to uniform")
QUICK_DIMS = (3, 10)
QUICK_BATCH = "64"
COLUMNS = (
    "ours vMF (ms)",
    "power-spherical PS (ms)",
    "ours PS (ms)",
    "scipy vMF, one (μ, κ) (ms)",
    "ours vMF / power-spherical",
)


def _table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_quick_benchmark_prints_every_row():
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    # A subprocess, so that the script's global settings (threads, validation) stay out of this one.
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = _table_rows(result.stdout)
    header, separator, body = rows[0], rows[1], rows[2:]
    assert header[:3] == ["op", "m", "batch"]
    assert tuple(header[3:]) == COLUMNS
    assert all(set(cell) <= set("-:") for cell in separator)

    expected = {(op, str(dim), QUICK_BATCH) for op in OPS for dim in QUICK_DIMS}
    keys = [tuple(row[:3]) for row in body]
    assert sorted(keys) == sorted(expected)
    for row in body:
        assert len(row) == len(header)
        op = row[0]
        ours, reference, ours_ps, scipy_cell, ratio = row[3:]
        for cell in (ours, reference, ours_ps, ratio):
            assert float(cell) > 0
        if op in ("rsample", "log_prob"):
            assert float(scipy_cell) > 0
        else:  # no gradients and no batched KL in scipy
            assert scipy_cell == "—"

    assert "dtype float32" in result.stdout
    assert "vMF rsample+backward at m=10, batch=1e5:" in result.stdout

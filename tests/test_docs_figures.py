"""The documentation's figure scripts run and produce images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_posteriors_figure(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "posteriors_figure", ROOT / "docs" / "figures" / "posteriors.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(tmp_path / "posteriors.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10000

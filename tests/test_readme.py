"""README and CI agree: .ci/run runs the README's test command, and the quickstart snippet runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    bash_blocks = _code_blocks("bash")
    assert len(bash_blocks) == 2, "the README gives exactly two set-up commands: install, then test"
    install, test = (block.strip() for block in bash_blocks)
    assert 'pip install -e ".[dev]"' in install
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines(), f"{test!r} must be a line of .ci/run"
    assert 'pip install -e ".[dev]"' in ci


def test_distribution_quickstart_runs():
    snippet = _code_blocks("python")[0]
    namespace: dict = {}
    exec(compile(snippet, "README quickstart", "exec"), namespace)
    assert namespace["z"].shape == (3, 10)
    assert namespace["kl"].shape == (3,)

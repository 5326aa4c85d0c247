"""README and CI agree: .ci/run runs the README's test and docs commands, and the quickstart runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks(language: str, text: str | None = None) -> list[str]:
    text = (ROOT / "README.md").read_text() if text is None else text
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _section(title: str) -> str:
    """The README's ``## title`` section, up to the next ``## `` heading."""
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", (ROOT / "README.md").read_text(), re.S | re.M
    )
    assert match, f"the README has a '## {title}' section"
    return match.group(1)


def test_ci_runs_the_readme_test_command():
    bash_blocks = _code_blocks("bash", _section("Set-up"))
    assert len(bash_blocks) == 2, "the README gives exactly two set-up commands: install, then test"
    install, test = (block.strip() for block in bash_blocks)
    assert 'pip install -e ".[dev]"' in install
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines(), f"{test!r} must be a line of .ci/run"
    assert 'pip install -e ".[dev]"' in ci


def test_ci_builds_the_docs_like_the_readme():
    (docs,) = (block.strip() for block in _code_blocks("bash", _section("Documentation")))
    assert docs.startswith("python -m sphinx -W"), "the docs build treats warnings as errors"
    ci = (ROOT / ".ci" / "run").read_text()
    assert docs in ci.splitlines(), f"{docs!r} must be a line of .ci/run"


def test_distribution_quickstart_runs():
    snippet = _code_blocks("python")[0]
    namespace: dict = {}
    exec(compile(snippet, "README quickstart", "exec"), namespace)
    assert namespace["z"].shape == (3, 10)
    assert namespace["kl"].shape == (3,)


def test_readme_links_to_existing_tutorials():
    links = re.findall(r"\]\((docs/tutorials/[^)]*)\)", _section("Tutorials"))
    assert any(link.endswith("tutorial_01_distributions.py") for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing tutorials: {missing}"

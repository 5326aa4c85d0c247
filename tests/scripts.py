"""Running the repository's scripts from the tests, each in its own Python process (so that a
script's global settings, such as the thread count, stay out of the test process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_script(
    script: Path, *args: str, cwd: Path | None = None, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    """``python script *args`` with UTF-8 output; ``env`` adds environment variables. The
    caller checks the return code."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **env},
        cwd=cwd,
        timeout=timeout,
        check=False,
    )

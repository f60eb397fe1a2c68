"""The tree stays ruff-clean: a lint error fails the suite like any other regression."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_ruff_is_clean(repo_root: Path) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists() and shutil.which("ruff") is None:
        pytest.skip("ruff not installed")
    result = subprocess.run(
        [str(ruff if ruff.exists() else "ruff"), "check", "meshctl", "tests", "bench"],
        cwd=repo_root, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr

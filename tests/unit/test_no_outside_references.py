"""The repository stands alone: no file of it sends a reader to notes outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ("FIELD-NOTES", "/work/shared")


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                           check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if name == "tests/unit/test_no_outside_references.py" or not path.is_file():
            continue
        text = path.read_bytes().decode(errors="replace")
        found += [f"{name}: {word}" for word in OUTSIDE if word in text]
    assert found == []

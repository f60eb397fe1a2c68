"""Which commit a desired-state directory is at, and whether it differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def worktree_commit(root: Path) -> tuple[str | None, bool]:
    """HEAD and whether files under `root` differ from it (untracked ones count), when `root` is
    in a git worktree. Git answers itself: two short commands, where a library costs an import."""
    head = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return None, False
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    return head, bool(status)


def _git(root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None

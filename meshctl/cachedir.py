"""Where meshctl keeps its caches: memos that only save time and can be deleted at any moment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """MESHCTL_CACHE_DIR, else $XDG_CACHE_HOME/meshctl, else ~/.cache/meshctl."""
    explicit = os.environ.get("MESHCTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshctl"

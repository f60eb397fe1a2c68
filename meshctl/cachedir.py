"""Where meshctl keeps its caches: memos that only save time and can be deleted at any moment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """MESHCTL_CACHE_DIR, else $XDG_CACHE_HOME/meshctl, else ~/.cache/meshctl."""
    explicit = os.environ.get("MESHCTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshctl"


def write_cache(path: Path, data: bytes) -> bool:
    """Replace the cache file `path` atomically (rename); False when it could not be written: a
    cache that loses a write costs time next run, nothing else."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False
    return True

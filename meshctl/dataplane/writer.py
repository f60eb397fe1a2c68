"""One writer per node's datapath at a time, across processes: an flock per (cluster, node).

The CLI's lab driver and the node's agent (following pods between applies) both write a node's
maps; each takes this lock around observe-and-reconcile, so neither diffs against a state the
other is halfway through changing. Re-entrant within a thread.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR_ENV = "MESHCTL_NODE_LOCK_DIR"
_held = threading.local()


def lock_path(cluster: str, node: str) -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV, "/run/meshctl/nodes")) / f"{cluster}.{node}.lock"


@contextmanager
def datapath_writer(cluster: str, node: str) -> Iterator[None]:
    key = (cluster, node)
    held: set[tuple[str, str]] = _held.__dict__.setdefault("keys", set())
    if key in held:
        yield
        return
    path = lock_path(cluster, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)

"""The node's share of the state (meshctl.state.cluster), kept in the agent's directory.

Written only when the node is at the state the share records (its fingerprint), read by every
plan, apply and drift, removed when meshctl is uninstalled from the node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshctl.state.atomic import atomic_write
from meshctl.state.cluster import share_of
from meshctl.state.store import State

APPLIED_FILE = "applied.json"


def read_share(directory: Path, node: str) -> State | None:
    """The share the node holds, or None; ValueError when the file is corrupt."""
    try:
        raw = (directory / APPLIED_FILE).read_bytes()
    except FileNotFoundError:
        return None
    return share_of(json.loads(raw), node)


def write_share(directory: Path, share: dict[str, Any]) -> None:
    atomic_write(directory / APPLIED_FILE, json.dumps(share, separators=(",", ":")).encode(), mode=0o600)


def clear_share(directory: Path) -> None:
    (directory / APPLIED_FILE).unlink(missing_ok=True)

"""The node's share of the state (meshctl.state.cluster), kept in the agent's directory.

Written only when the node is at the state the share records (its fingerprint), read by every
plan, apply and drift, removed when meshctl is uninstalled from the node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshctl.state.atomic import atomic_write

APPLIED_FILE = "applied.json"


def read_share(directory: Path) -> Any:
    """The share the node holds as written (its readers check it with share_of), or None;
    ValueError when the file is not JSON."""
    try:
        return json.loads((directory / APPLIED_FILE).read_bytes())
    except FileNotFoundError:
        return None


def write_share(directory: Path, share: dict[str, Any]) -> None:
    atomic_write(directory / APPLIED_FILE, json.dumps(share, separators=(",", ":")).encode(), mode=0o600)


def clear_share(directory: Path) -> None:
    (directory / APPLIED_FILE).unlink(missing_ok=True)

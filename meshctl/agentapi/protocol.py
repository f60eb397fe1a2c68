"""The wire format of the agent API: socket paths, and checks and drop counters as JSON.

NodeStates travel in their canonical form (NodeState.canonical / from_canonical), the same form
plans and the journal use, so the fingerprint the client computes is the one the agent checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.apply.gates import CheckLike, MetricCounts
from meshctl.errors import MeshctlError

API_VERSION = "v1"
SOCKET_DIR_ENV = "MESHCTL_AGENT_SOCKET_DIR"  # set by the DaemonSet (examples/kubernetes)
DEFAULT_SOCKET_DIR = Path("/run/meshctl")


class AgentApiError(MeshctlError):
    """The agent answered with an error, or could not be reached."""

    def __init__(self, node: str, message: str, status: int = 0) -> None:
        super().__init__(f"agent of node {node}: {message}")
        self.node, self.status, self.detail = node, status, message


class StaleNodeError(AgentApiError):
    """409: the node's live state is not the one the caller planned from, or another apply
    session holds the node (`held` names it)."""

    def __init__(self, node: str, message: str, status: int = 409, held: str | None = None) -> None:
        super().__init__(node, message, status)
        self.held = held


def socket_dir(explicit: str | Path | None = None) -> Path:
    """--api-socket-dir / [apply] socketDir, else $MESHCTL_AGENT_SOCKET_DIR, else /run/meshctl."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(SOCKET_DIR_ENV)
    return Path(env) if env else DEFAULT_SOCKET_DIR


def socket_path(cluster: str, node: str, directory: str | Path | None = None) -> Path:
    return socket_dir(directory) / f"agent-{cluster}-{node}.sock"


@dataclass(frozen=True)
class WireCheck:
    """A ConnectivityCheck as sent to an agent: `to` is an IPv4 address or "ns/pod"."""

    name: str
    from_: str
    to: str
    port: int
    protocol: str
    expect: str

    @classmethod
    def of(cls, check: CheckLike, to: str | None = None) -> WireCheck:
        return cls(check.name, check.from_, to or str(check.to), int(check.port), str(check.protocol),
                   str(check.expect))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "from": self.from_, "to": self.to, "port": self.port,
                "protocol": self.protocol, "expect": self.expect}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WireCheck:
        try:
            check = cls(str(d["name"]), str(d["from"]), str(d["to"]), int(d["port"]),
                        str(d.get("protocol", "TCP")), str(d["expect"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"bad check {dict(d)!r}: {err}") from None
        if check.expect not in ("allowed", "denied"):
            raise ValueError(f"check {check.name}: expect must be allowed or denied, not {check.expect!r}")
        return check


def counts_to_json(counts: MetricCounts) -> list[list[int]]:
    return [[v, r, d, n] for (v, r, d), n in sorted(counts.items())]


def counts_from_json(rows: Any) -> dict[tuple[int, int, int], int]:
    return {(int(v), int(r), int(d)): int(n) for v, r, d, n in rows}

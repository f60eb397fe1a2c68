"""An apply session's hold on a node: the node reverts itself if the session goes silent.

The CLI's first apply of a rollout to a node opens a session there: the agent keeps the node's
before-state (durably, in the node's directory) and a lease. The CLI renews the leases of every
node it changed while the rollout runs, and ends them once the apply is recorded. A CLI killed
in the middle (a CI runner cancelled, kill -9) renews nothing: when a lease runs out, the node's
own agent puts the node back at its before-state, so no node stays half-way through a rollout
and nobody has to run `recover`. While a session holds a node, an apply of another session is
refused, and the endpoint sync waits.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.nodestate import NodeState
from meshctl.state.atomic import atomic_write

SESSION_FILE = "session.json"
MAX_LEASE_S = 3600.0


@dataclass(frozen=True)
class ApplySession:
    id: str
    before: NodeState  # where the node was when the session first changed it
    deadline: float  # wall-clock seconds: it survives a restart of the agent

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.deadline

    def renewed(self, lease_s: float) -> ApplySession:
        return ApplySession(self.id, self.before, time.time() + lease_s)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "before": self.before.canonical(), "deadline": self.deadline}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ApplySession:
        return cls(str(d["id"]), NodeState.from_canonical(d["before"]), float(d["deadline"]))


def lease_of(raw: Any) -> tuple[str, float]:
    """(id, lease seconds) of a request's {"id", "lease_s"}; ValueError when unusable."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        raise ValueError("session: expected {\"id\": ..., \"lease_s\": ...}")
    lease = float(raw.get("lease_s", 0))
    if not 0 < lease <= MAX_LEASE_S:
        raise ValueError(f"session.lease_s must be within 0..{MAX_LEASE_S:g}")
    return raw["id"], lease


def load_session(directory: Path) -> ApplySession | None:
    try:
        return ApplySession.from_json(json.loads((directory / SESSION_FILE).read_bytes()))
    except FileNotFoundError:
        return None


def save_session(directory: Path, session: ApplySession | None) -> None:
    path = directory / SESSION_FILE
    if session is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, json.dumps(session.to_json()).encode(), mode=0o600)

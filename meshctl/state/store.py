"""The state file (state/state.json): what meshctl remembers between runs. No secrets.

Like Terraform's statefile: a lineage (uuid4 at the first write) names this state's history and
a serial counts applies, so a plan made from serial 7 is refused once serial 8 exists. The
identity and endpoint-id tables are opaque blobs owned by the compiler (IdentityTable.to_json()
and EndpointTable.to_json()): stored as given, so numbers stay stable across runs. Per node, the
last applied fingerprint and intended NodeState (canonical form) are the "last applied intent"
that drift detection compares the kernel with.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshctl.errors import StateError
from meshctl.nodestate import NodeState
from meshctl.state.atomic import atomic_write

STATE_FILE = "state.json"
STATE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class NodeRecord:
    """The last intent applied to one node."""

    fingerprint: str
    intended: NodeState
    applied_at: str


@dataclass(frozen=True)
class State:
    """One snapshot of the state. `lineage` is None until the first write."""

    lineage: str | None = None
    serial: int = 0
    identities: dict[str, Any] = field(default_factory=dict)
    endpoint_ids: dict[str, Any] = field(default_factory=dict)
    last_plan_id: str | None = None
    last_applied_at: str | None = None
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    # cookie (as text) -> its rule as plan.model.rule_json writes it: the rules behind the cookies
    # applied so far, so flows are attributed to what was applied (not to the working tree)
    rules: dict[str, Any] = field(default_factory=dict)
    # staged (audit-mode) policy "Kind ns/name" -> {"digest", "since"}: when an apply first loaded
    # this version of it staged (meshctl.plan.staged.record_staged)
    staged: dict[str, dict[str, str]] = field(default_factory=dict)

    def with_tables(self, identities: dict[str, Any], endpoint_ids: dict[str, Any]) -> State:
        return replace(self, identities=identities, endpoint_ids=endpoint_ids)

    def record_apply(self, plan_id: str, applied: dict[str, NodeState], now: datetime | None = None,
                     rules: dict[str, Any] | None = None,
                     staged: dict[str, dict[str, str]] | None = None) -> State:
        """The state after an apply of `plan_id` left `applied` on those nodes: serial + 1.

        `rules` (cookie -> rule of the plan's target) are added to those recorded before: a
        node the plan did not touch still holds the cookies of an earlier apply."""
        stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        nodes = dict(self.nodes)
        for name, ns in applied.items():
            nodes[name] = NodeRecord(ns.fingerprint(), ns, stamp)
        return replace(self, serial=self.serial + 1, last_plan_id=plan_id, last_applied_at=stamp, nodes=nodes,
                       rules={**self.rules, **(rules or {})},
                       staged=self.staged if staged is None else staged)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": STATE_FORMAT_VERSION,
            "lineage": self.lineage,
            "serial": self.serial,
            "identities": self.identities,
            "endpoint_ids": self.endpoint_ids,
            "last_plan_id": self.last_plan_id,
            "last_applied_at": self.last_applied_at,
            "rules": self.rules,
            "staged": self.staged,
            "nodes": {
                name: {
                    "fingerprint": r.fingerprint,
                    "applied_at": r.applied_at,
                    "intended": r.intended.canonical(),
                }
                for name, r in sorted(self.nodes.items())
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        if d.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {d.get('format_version')!r}")
        return cls(
            lineage=d["lineage"],
            serial=int(d["serial"]),
            identities=d.get("identities") or {},
            endpoint_ids=d.get("endpoint_ids") or {},
            last_plan_id=d.get("last_plan_id"),
            last_applied_at=d.get("last_applied_at"),
            rules=d.get("rules") or {},
            staged=d.get("staged") or {},
            nodes={
                name: NodeRecord(r["fingerprint"], NodeState.from_canonical(r["intended"]), r["applied_at"])
                for name, r in (d.get("nodes") or {}).items()
            },
        )


def load_state(state_dir: Path) -> State:
    """The saved state, or an empty one (serial 0, no lineage) when none was written yet."""
    path = state_dir / STATE_FILE
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return State()
    except OSError as err:
        raise StateError(f"{path}: cannot read the state: {err.strerror}") from err
    try:
        return State.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as err:
        raise StateError(f"{path}: corrupt state file: {err}") from err


def save_state(state_dir: Path, state: State) -> State:
    """Write atomically; gives the state a lineage on its first write. Returns what was written."""
    if state.lineage is None:
        state = replace(state, lineage=str(uuid.uuid4()))
    body = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
    atomic_write(state_dir / STATE_FILE, body.encode(), mode=0o600)
    return state

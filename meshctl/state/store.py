"""The state file (state/state.json): what meshctl remembers between runs. No secrets.

Like Terraform's statefile: a lineage (uuid4 at the first write) names this state's history and
a serial counts applies, so a plan made from serial 7 is refused once serial 8 exists. The
identity and endpoint-id tables are opaque values owned by the compiler (IdentityTable.as_dict()
and EndpointTable.as_dict()): stored as given, so numbers stay stable across runs. Per node, the
last applied fingerprint and intended NodeState (canonical form, its policy maps stored once by
digest) are the "last applied intent" that drift detection compares the kernel with. The file is
compact JSON: `meshctl state show` is the human view.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshctl.errors import StateError
from meshctl.lazypolicy import text_sha
from meshctl.nodestate import NodeState, policy_map_sha, policy_map_text
from meshctl.state.atomic import atomic_write

STATE_FILE = "state.json"
STATE_FORMAT_VERSION = 2  # 2: policy maps stored once, by digest (format 1 files are still read)


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class NodeRecord:
    """The last intent applied to one node. In the file its canonical form (policy maps aside)
    and each policy map are JSON texts kept as strings, parsed only when the intent is read: a
    plan needs the tables and the serial, not the million entries of 10,000 pods' intent."""

    __slots__ = ("_intended", "_stored", "applied_at", "fingerprint")

    def __init__(self, fingerprint: str, intended: NodeState | None, applied_at: str,
                 stored: tuple[str, list[list[Any]], dict[str, str]] | None = None) -> None:
        self.fingerprint, self.applied_at = fingerprint, applied_at
        self._intended, self._stored = intended, stored

    @property
    def intended(self) -> NodeState:
        if self._intended is None:
            assert self._stored is not None
            base, refs, maps = self._stored
            rows = {d: json.loads(maps[d]) for d in {d for _, d in refs}}  # each shared map once
            self._intended = NodeState.from_canonical({**json.loads(base),
                                                       "policies": [[ep, rows[d]] for ep, d in refs]})
        return self._intended

    def stored(self) -> tuple[str, list[list[Any]], dict[str, str]]:
        """(canonical form without policy maps as JSON text, [[endpoint, map digest]], digest ->
        the map's rows as JSON text)."""
        if self._stored is not None:
            base, refs, maps = self._stored
            return base, refs, {d: maps[d] for _, d in refs}
        ns = self.intended
        refs, texts = [], {}
        for ep, entries in ns.policies.items():
            key = policy_map_sha(entries)  # text and sha made once per shared map object
            texts[key] = policy_map_text(entries)  # the rows' compact JSON
            refs.append([ep, key])
        return _text(ns.canonical(policies=False)), refs, texts

    @classmethod
    def from_file(cls, r: dict[str, Any], maps: dict[str, str]) -> NodeRecord:
        if isinstance(r["intended"], dict):  # format 1: the canonical form with each endpoint's rows
            base = dict(r["intended"])
            policies = base.pop("policies", [])
            texts = [_text(rows) for _, rows in policies]
            refs = [[ep, text_sha(t)] for (ep, _), t in zip(policies, texts, strict=True)]
            return cls(r["fingerprint"], None, r["applied_at"],
                       (_text(base), refs, {d: t for (_, d), t in zip(refs, texts, strict=True)}))
        refs = r["policy_refs"]
        missing = [d for _, d in refs if d not in maps]
        if missing:
            raise ValueError(f"policy map {missing[0]} is referenced but not stored")
        return cls(r["fingerprint"], None, r["applied_at"], (r["intended"], refs, maps))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeRecord):
            return NotImplemented
        return (self.fingerprint, self.applied_at, self.intended) == (
            other.fingerprint, other.applied_at, other.intended)

    __hash__ = None  # type: ignore[assignment]


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
    # the runtime inventory's revision the last apply compiled ([inventory] source = "lab"): pods
    # that came and went since are churn the node agents followed, not drift
    inventory_revision: int | None = None

    def with_tables(self, identities: dict[str, Any], endpoint_ids: dict[str, Any]) -> State:
        return replace(self, identities=identities, endpoint_ids=endpoint_ids)

    def record_apply(self, plan_id: str, applied: dict[str, NodeState], now: datetime | None = None,
                     rules: dict[str, Any] | None = None,
                     staged: dict[str, dict[str, str]] | None = None,
                     inventory_revision: int | None = None) -> State:
        """The state after an apply of `plan_id` left `applied` on those nodes: serial + 1.

        `rules` (cookie -> rule of the plan's target) are added to those recorded before: a
        node the plan did not touch still holds the cookies of an earlier apply."""
        stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        nodes = dict(self.nodes)
        for name, ns in applied.items():
            nodes[name] = NodeRecord(ns.fingerprint(), ns, stamp)
        return replace(self, serial=self.serial + 1, last_plan_id=plan_id, last_applied_at=stamp, nodes=nodes,
                       rules={**self.rules, **(rules or {})},
                       staged=self.staged if staged is None else staged,
                       inventory_revision=self.inventory_revision if inventory_revision is None
                       else inventory_revision)

    def forget_node(self, node: str) -> State:
        """The state after `node` was uninstalled: its record gone, serial + 1."""
        return replace(self, serial=self.serial + 1, nodes={n: r for n, r in self.nodes.items() if n != node})

    def to_text(self) -> str:
        """The file's text: compact JSON. Policy maps are stored once by content (the endpoints
        of one identity share a map, on every node); each node names its endpoints' maps by digest."""
        maps: dict[str, str] = {}
        nodes = {}
        for name, r in sorted(self.nodes.items()):
            base, refs, texts = r.stored()
            maps.update(texts)
            nodes[name] = {"fingerprint": r.fingerprint, "applied_at": r.applied_at, "intended": base,
                           "policy_refs": refs}
        body = {
            "format_version": STATE_FORMAT_VERSION,
            "lineage": self.lineage,
            "serial": self.serial,
            "identities": self.identities,
            "endpoint_ids": self.endpoint_ids,
            "last_plan_id": self.last_plan_id,
            "last_applied_at": self.last_applied_at,
            "rules": self.rules,
            "staged": self.staged,
            "nodes": nodes,
            "policy_maps": maps,
            **({} if self.inventory_revision is None else {"inventory_revision": self.inventory_revision}),
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> State:
        version = d.get("format_version")
        if version not in (1, STATE_FORMAT_VERSION):
            raise ValueError(f"unsupported format_version {version!r}")
        maps = d.get("policy_maps") or {}
        return cls(
            lineage=d["lineage"],
            serial=int(d["serial"]),
            identities=d.get("identities") or {},
            endpoint_ids=d.get("endpoint_ids") or {},
            last_plan_id=d.get("last_plan_id"),
            last_applied_at=d.get("last_applied_at"),
            rules=d.get("rules") or {},
            staged=d.get("staged") or {},
            inventory_revision=None if d.get("inventory_revision") is None else int(d["inventory_revision"]),
            nodes={name: NodeRecord.from_file(r, maps) for name, r in (d.get("nodes") or {}).items()},
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
    atomic_write(state_dir / STATE_FILE, state.to_text().encode(), mode=0o600)
    return state

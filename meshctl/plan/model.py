"""A Plan: everything a person reviews and apply executes, as plain data.

Renderers only render a Plan (they compute nothing); the plan file is Plan.to_json() plus its
plan_id, the sha256 of the canonical body, so any edit is detected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from meshctl.catalog import RuleOrigin
from meshctl.errors import PlanError
from meshctl.nodestate import NodeState
from meshctl.plan.action import Action
from meshctl.plan.change import Change
from meshctl.plan.digests import NodeDigests
from meshctl.plan.staged import Enforcement, StagedPolicy

PLAN_FORMAT_VERSION = "2.5"  # major.minor: a newer minor reads fine, another major is refused
# 2.0: nodes record changes and fingerprints only (1.x embedded every full target state)
# 2.1: nodes also record per-component digests of their observed state (what a stale plan names)
# 2.2: "cuts": the established connections the plan cuts (from the live conntrack tables)
# 2.3: "rules": cookie -> the rule behind it, for every cookie the target holds (apply records
#      them in the state so flows are attributed to the applied revision, not the working tree)
# 2.4: "staged": staged (audit-mode) policies of the target, "enforcing": those the plan turns from
#      audit to enforced with their AUDIT evidence, "staged_impact": what enforcing them would change
# 2.5: node fingerprints hash each policy map's digest, not its rows (older plans are stale)


@dataclass(frozen=True)
class ImpactRow:
    """One pod pair and port whose verdict differs between observed and intended."""

    src: str  # "ns/pod" or "world"
    dst: str
    protocol: str  # tcp | udp | sctp
    port: int
    before: str  # FORWARDED | DROPPED
    after: str
    rules: tuple[str, ...] = ()  # what decides the new verdict (or the old one when none does)

    def to_json(self) -> dict[str, Any]:
        return {
            "src": self.src, "dst": self.dst, "protocol": self.protocol, "port": self.port,
            "before": self.before, "after": self.after, "rules": list(self.rules),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImpactRow:
        return cls(d["src"], d["dst"], d["protocol"], d["port"], d["before"], d["after"], tuple(d["rules"]))


@dataclass(frozen=True)
class CutRow:
    """Established connections the plan cuts, of one (source, destination, protocol, port).

    Counted from the live conntrack tables when the plan was made (meshctl.plan.cuts);
    `changes` are the addresses of the changes that cut them."""

    src: str  # "ns/pod", an identity name, or "world"
    dst: str
    protocol: str  # tcp | udp | sctp | icmp
    port: int
    count: int
    changes: tuple[str, ...] = ()

    # A cut is a connection going FORWARDED -> DROPPED: the apply's drop gate can take cut rows
    # where it takes impact rows (meshctl.apply.gates.ImpactLike).
    before = "FORWARDED"
    after = "DROPPED"

    @property
    def line(self) -> str:
        """`cuts 14 established connections production/cache -> production/postgres:5432/tcp`."""
        noun = "connection" if self.count == 1 else "connections"
        return f"cuts {self.count} established {noun} {self.src} -> {self.dst}:{self.port}/{self.protocol}"

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "protocol": self.protocol, "port": self.port,
                "count": self.count, "changes": list(self.changes)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CutRow:
        return cls(d["src"], d["dst"], d["protocol"], int(d["port"]), int(d["count"]), tuple(d["changes"]))


@dataclass(frozen=True)
class PlanWarning:
    """A diagnostic like Terraform's: severity, one-line summary, detail."""

    summary: str
    detail: str = ""
    node: str | None = None
    severity: Literal["warning", "info"] = "warning"

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "summary": self.summary, "detail": self.detail, "node": self.node}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlanWarning:
        return cls(d["summary"], d.get("detail", ""), d.get("node"), d.get("severity", "warning"))


@dataclass(frozen=True)
class NodePlan:
    """One node: the fingerprints it was planned from and to, and its changes.

    Like Terraform's plan file, the file records changes, not the whole target: the target is
    `apply_changes(observed, changes)`, exact because apply refuses a stale plan (the live state
    has `observed_fingerprint`) and checked against `intended_fingerprint`. A plan made in this
    process also keeps the compiled target in memory (`intended`; never written, never compared).
    `digests` (format 2.1; None in a 2.0 file) says per component what the observed state held.
    """

    node: str
    observed_fingerprint: str
    intended_fingerprint: str
    changes: tuple[Change, ...] = ()
    intended: NodeState | None = field(default=None, compare=False, repr=False)
    digests: NodeDigests | None = field(default=None, repr=False)

    @classmethod
    def of(cls, observed: NodeState, intended: NodeState, changes: tuple[Change, ...]) -> NodePlan:
        """A node plan with nothing to do shares one fingerprint (equal states)."""
        parts = observed.canonical_parts()  # for the fingerprint and the digests: made once
        before = observed.fingerprint(parts)
        after = before if not changes else intended.fingerprint()
        return cls(intended.node, before, after, changes, intended, NodeDigests.of(observed, parts))

    def target_for(self, observed: NodeState) -> NodeState:
        """The exact state this node must reach from `observed` (freshly observed, checked fresh).

        Raises PlanError when `observed` is not the state the plan was made from or the changes do
        not lead to the planned target (a damaged plan).
        """
        from meshctl.plan.patch import apply_changes

        if observed.node != self.node:
            raise PlanError(f"plan of node {self.node} used for node {observed.node}")
        if self.intended is not None:
            return self.intended
        if not self.changes:
            return observed
        target = apply_changes(observed, self.changes)
        if target.fingerprint() != self.intended_fingerprint:
            raise PlanError(
                f"node {self.node}: the plan's changes do not lead to its target "
                f"(fingerprint {self.intended_fingerprint}); make a new plan"
            )
        return target

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "observed_fingerprint": self.observed_fingerprint,
            "intended_fingerprint": self.intended_fingerprint,
            **({"observed_digests": self.digests.to_json()} if self.digests is not None else {}),
            "resource_changes": [c.to_json() for c in self.changes],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NodePlan:
        digests = d.get("observed_digests")
        return cls(
            node=d["node"],
            observed_fingerprint=d["observed_fingerprint"],
            intended_fingerprint=d["intended_fingerprint"],
            changes=tuple(Change.from_json(c) for c in d["resource_changes"]),
            digests=NodeDigests.from_json(digests) if digests is not None else None,
        )


@dataclass(frozen=True)
class Summary:
    add: int
    change: int
    destroy: int

    @classmethod
    def of(cls, changes: Iterable[Change]) -> Summary:
        add = change = destroy = 0
        for c in changes:
            add += c.action in (Action.CREATE, Action.REPLACE)
            change += c.action is Action.UPDATE
            destroy += c.action in (Action.DELETE, Action.REPLACE)
        return cls(add, change, destroy)

    @property
    def line(self) -> str:
        if not (self.add or self.change or self.destroy):
            return "No changes. The datapath matches the desired state."
        return f"Plan: {self.add} to add, {self.change} to change, {self.destroy} to destroy."


@dataclass(frozen=True)
class Plan:
    created_at: str
    meshctl_version: str
    source_commit: str | None
    source_dirty: bool
    state_lineage: str | None
    state_serial: int
    nodes: tuple[NodePlan, ...]
    impact: tuple[ImpactRow, ...] = ()
    warnings: tuple[PlanWarning, ...] = ()
    cuts: tuple[CutRow, ...] = ()  # established connections the changes cut (format 2.2)
    rules: tuple[tuple[int, RuleOrigin], ...] = ()  # cookie -> rule of every target cookie (2.3)
    staged: tuple[StagedPolicy, ...] = ()  # staged policies of the target (2.4)
    enforcing: tuple[Enforcement, ...] = ()  # staged policies this plan enforces, with evidence (2.4)
    staged_impact: tuple[ImpactRow, ...] = ()  # connections that change once the staged are enforced
    # with a runtime inventory ([inventory] source = "lab"): what the nodes keep so their agents
    # follow pods (meshctl.compile.intent, per-node parts aside), and the inventory planned from
    intent: dict[str, Any] | None = None
    inventory: dict[str, Any] | None = None  # {"source", "revision", "churn"}
    format_version: str = PLAN_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys of a newer minor version

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(c for n in self.nodes for c in n.changes)

    @property
    def summary(self) -> Summary:
        return Summary.of(self.changes)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def cut_connections(self) -> int:
        return sum(r.count for r in self.cuts)

    def cuts_of(self, change: Change) -> tuple[CutRow, ...]:
        """The cut rows this change is responsible for (or shares)."""
        return tuple(r for r in self.cuts if change.address in r.changes)

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.node == name:
                return n
        raise KeyError(name)

    def body(self) -> dict[str, Any]:
        """Everything but plan_id, JSON-ready."""
        s = self.summary
        return {
            **self.extra,
            "format_version": self.format_version,
            "created_at": self.created_at,
            "meshctl_version": self.meshctl_version,
            "source": {"commit": self.source_commit, "dirty": self.source_dirty},
            "state": {"lineage": self.state_lineage, "serial": self.state_serial},
            "summary": {"add": s.add, "change": s.change, "destroy": s.destroy},
            "impact": [r.to_json() for r in self.impact],
            **({"cuts": [r.to_json() for r in self.cuts]}
               if format_tuple(self.format_version) >= (2, 2) else {}),
            **({"rules": {str(c): rule_json(o) for c, o in self.rules}}
               if format_tuple(self.format_version) >= (2, 3) else {}),
            **({"staged": [s.to_json() for s in self.staged],
                "enforcing": [e.to_json() for e in self.enforcing],
                "staged_impact": [r.to_json() for r in self.staged_impact]}
               if format_tuple(self.format_version) >= (2, 4) else {}),
            "warnings": [w.to_json() for w in self.warnings],
            "nodes": [n.to_json() for n in self.nodes],
            **({"intent": self.intent} if self.intent is not None else {}),
            **({"inventory": self.inventory} if self.inventory is not None else {}),
        }

    @cached_property  # a frozen plan's id: its body is hashed once (it is printed, saved, checked)
    def plan_id(self) -> str:
        return compute_plan_id(self.body())

    def to_json(self) -> dict[str, Any]:
        body = self.body()
        if "plan_id" not in self.__dict__:  # the id of this body: not made again (cached_property's slot)
            self.__dict__["plan_id"] = compute_plan_id(body)
        return {"plan_id": self.plan_id, **body}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        known = {"plan_id", "format_version", "created_at", "meshctl_version", "source", "state",
                 "summary", "impact", "cuts", "rules", "warnings", "nodes", "staged", "enforcing",
                 "staged_impact", "intent", "inventory"}
        return cls(
            format_version=d["format_version"],
            created_at=d["created_at"],
            meshctl_version=d["meshctl_version"],
            source_commit=d["source"]["commit"],
            source_dirty=bool(d["source"]["dirty"]),
            state_lineage=d["state"]["lineage"],
            state_serial=int(d["state"]["serial"]),
            nodes=tuple(NodePlan.from_json(n) for n in d["nodes"]),
            impact=tuple(ImpactRow.from_json(r) for r in d["impact"]),
            warnings=tuple(PlanWarning.from_json(w) for w in d["warnings"]),
            cuts=tuple(CutRow.from_json(r) for r in d.get("cuts", ())),  # absent before 2.2
            rules=tuple(sorted((int(c), rule_from(o)) for c, o in d.get("rules", {}).items())),  # 2.3
            staged=tuple(StagedPolicy.from_json(s) for s in d.get("staged", ())),  # 2.4
            enforcing=tuple(Enforcement.from_json(e) for e in d.get("enforcing", ())),
            staged_impact=tuple(ImpactRow.from_json(r) for r in d.get("staged_impact", ())),
            intent=d.get("intent"),
            inventory=d.get("inventory"),
            extra={k: v for k, v in d.items() if k not in known},
        )


def rule_json(o: RuleOrigin) -> list[Any]:
    return [o.kind, o.namespace, o.name, o.section, o.index, o.file, o.line]


def rule_from(v: list[Any]) -> RuleOrigin:
    kind, namespace, name, section, index, file, line = v
    return RuleOrigin(str(kind), str(namespace), str(name), str(section), int(index), str(file), int(line))


FINGERPRINTS_SINCE = (2, 5)  # plans of an older minor recorded fingerprints of another kind


def format_tuple(text: str) -> tuple[int, ...]:
    """"2.1" -> (2, 1); unparsable parts count as 0 (the reader refuses other majors anyway)."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


def canonical_json(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def compute_plan_id(body: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()

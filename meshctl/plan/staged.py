"""Staged policies in a plan: which are staged, which this plan enforces, and the evidence.

A staged (audit-mode) policy is loaded but changes no verdict; the datapath reports AUDIT flows
where it would. The plan names every staged policy of the target with how long this version of
it has been staged (the state records when an apply first loaded it), and for each policy it
turns from audit to enforced, the AUDIT flows seen since it was staged, grouped by (source,
destination, port): the evidence a reviewer and `[rollout] requireCleanAudit` look at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

WOULD_DROP = "would drop"
WOULD_ALLOW = "would allow"


@dataclass(frozen=True)
class StagedPolicy:
    """A staged policy of the target: `since` is when this version was first applied staged
    (from the state), None when this plan stages it (new, or changed since)."""

    policy: str  # "Kind ns/name"
    digest: str
    since: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "digest": self.digest, "since": self.since}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StagedPolicy:
        return cls(str(d["policy"]), str(d["digest"]), d.get("since"))


@dataclass(frozen=True)
class AuditGroup:
    """AUDIT flows of one (source, destination, protocol, port) and effect."""

    src: str
    dst: str
    protocol: str  # tcp | udp | icmp ...
    port: int
    effect: str  # WOULD_DROP | WOULD_ALLOW
    count: int
    first_ns: int
    last_ns: int

    def line(self, now: datetime) -> str:
        """`1,284 flows production/cache -> production/postgres:5432/tcp would have been dropped,
        last 3 minutes ago`."""
        noun = "flow" if self.count == 1 else "flows"
        verb = "dropped" if self.effect == WOULD_DROP else "allowed"
        ago = age_text(now.timestamp() - self.last_ns / 1e9)
        return (f"{self.count:,} {noun} {self.src} -> {self.dst}:{self.port}/{self.protocol} "
                f"would have been {verb}, last {ago} ago")

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "protocol": self.protocol, "port": self.port,
                "effect": self.effect, "count": self.count, "first_ns": self.first_ns,
                "last_ns": self.last_ns}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AuditGroup:
        return cls(str(d["src"]), str(d["dst"]), str(d["protocol"]), int(d["port"]), str(d["effect"]),
                   int(d["count"]), int(d["first_ns"]), int(d["last_ns"]))


@dataclass(frozen=True)
class Enforcement:
    """A policy this plan turns from audit to enforced, with the AUDIT flows seen since it was
    staged. `evidence` None: no flow store could be read (nothing is known)."""

    policy: str
    since: str
    evidence: tuple[AuditGroup, ...] | None = ()

    def to_json(self) -> dict[str, Any]:
        evidence = None if self.evidence is None else [g.to_json() for g in self.evidence]
        return {"policy": self.policy, "since": self.since, "evidence": evidence}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Enforcement:
        raw = d.get("evidence")
        evidence = None if raw is None else tuple(AuditGroup.from_json(g) for g in raw)
        return cls(str(d["policy"]), str(d["since"]), evidence)


def staged_rows(
    target: Mapping[str, str], recorded: Mapping[str, Mapping[str, str]]
) -> tuple[StagedPolicy, ...]:
    """The target's staged policies (policy -> digest), with `since` when the state recorded
    this very version as staged."""
    out = []
    for policy, digest in sorted(target.items()):
        rec = recorded.get(policy) or {}
        since = rec.get("since") if rec.get("digest") == digest else None
        out.append(StagedPolicy(policy, digest, since))
    return tuple(out)


def enforced_now(
    recorded: Mapping[str, Mapping[str, str]], target_staged: Iterable[str], target_policies: Iterable[str]
) -> dict[str, str]:
    """policy -> staged since, for each policy the state has staged that the target still holds
    but no longer stages: the plan enforces it."""
    staged, present = set(target_staged), set(target_policies)
    return {p: str(r["since"]) for p, r in sorted(recorded.items()) if p in present and p not in staged}


def record_staged(
    recorded: Mapping[str, Mapping[str, str]], staged: Iterable[StagedPolicy], stamp: str
) -> dict[str, dict[str, str]]:
    """The state's staged record after an apply of a plan with these staged policies: a version
    already recorded keeps its date, a new or changed one starts now, the others are dropped."""
    out: dict[str, dict[str, str]] = {}
    for row in staged:
        rec = recorded.get(row.policy) or {}
        since = str(rec["since"]) if rec.get("digest") == row.digest and rec.get("since") else stamp
        out[row.policy] = {"digest": row.digest, "since": since}
    return out


def group_audits(flows: Iterable[Any]) -> tuple[AuditGroup, ...]:
    """AUDIT flows (meshctl.flows.flow.Flow) -> groups, would-drops first, biggest first."""
    groups: dict[tuple[str, str, str, int, str], list[int]] = {}
    for f in flows:
        src = f.src_pod or f.src_ip
        dst = f.dst_pod or f.dst_ip
        key = (src, dst, f.protocol_name.lower(), int(f.dst_port), f.audit_effect)
        g = groups.get(key)
        if g is None:
            groups[key] = [1, f.time_ns, f.time_ns]
        else:
            g[0] += 1
            g[1] = min(g[1], f.time_ns)
            g[2] = max(g[2], f.time_ns)
    rows = [AuditGroup(*key, n, first, last) for key, (n, first, last) in groups.items()]
    rows.sort(key=lambda g: (g.effect != WOULD_DROP, -g.count, g.src, g.dst, g.port))
    return tuple(rows)


def names_policy(flow: Any, policy: str) -> bool:
    """Does this AUDIT flow come from `policy` ("Kind ns/name")? Its rule (an allow or deny of
    the staged view) or, for a default deny, the policies isolating the endpoint in that view."""
    return flow.policy.startswith(policy + " ") or policy in flow.isolated_by


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def age_text(seconds: float) -> str:
    """`45 seconds`, `3 minutes`, `2 hours`, `4 days` (whole units, rounded down)."""
    seconds = max(0.0, seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = int(seconds)
    return f"{n} second{'s' if n != 1 else ''}"

"""The impact report as plain data: renderers only render it, JSON round-trips it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMPACT_FORMAT_VERSION = "1.0"


@dataclass(frozen=True)
class Revision:
    ref: str  # what the user asked for ("main", a sha, "worktree")
    commit: str | None
    dirty: bool = False

    @property
    def short(self) -> str:
        sha = (self.commit or "")[:10]
        label = self.ref if not sha or self.ref == self.commit else f"{self.ref} ({sha})"
        return label + (" + uncommitted changes" if self.dirty else "")

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "commit": self.commit, "dirty": self.dirty}


@dataclass(frozen=True)
class ImpactPair:
    """One (source, destination, port/protocol) whose verdict differs between base and head."""

    src: str  # "ns/pod" or "world"
    dst: str
    protocol: str  # tcp | udp | sctp
    port: int
    base: str  # FORWARDED | DROPPED
    head: str
    base_rules: tuple[str, ...] = ()  # what decides the verdict at base
    head_rules: tuple[str, ...] = ()  # what decides it at head

    @property
    def breaks(self) -> bool:
        return self.base == "FORWARDED" and self.head == "DROPPED"

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "protocol": self.protocol, "port": self.port,
                "base": self.base, "head": self.head, "base_rules": list(self.base_rules),
                "head_rules": list(self.head_rules)}


@dataclass(frozen=True)
class ReplayedFlow:
    """One distinct recorded connection (src pod, dst pod, port, protocol) judged at base and head."""

    src: str
    dst: str
    protocol: str
    port: int
    count: int  # recorded flow events in the window
    last_seen_ns: int
    recorded: str  # FORWARDED | DROPPED, the newest recorded verdict
    base: str
    head: str
    head_rules: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "protocol": self.protocol, "port": self.port,
                "count": self.count, "last_seen_ns": self.last_seen_ns, "recorded": self.recorded,
                "base": self.base, "head": self.head, "head_rules": list(self.head_rules)}


@dataclass(frozen=True)
class HttpChange:
    """An L7 port whose passing request shapes differ between base and head, for one client and
    server pod (meshctl.impact.http). `base`/`head`: the shapes, or ("every request",)."""

    src: str
    dst: str
    port: int
    side: str  # ingress (the server's proxy judges) | egress (the client's)
    base: tuple[str, ...]
    head: tuple[str, ...]

    @property
    def starts(self) -> tuple[str, ...]:
        return tuple(s for s in self.head if s not in self.base)

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(s for s in self.base if s not in self.head)

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "port": self.port, "side": self.side,
                "base": list(self.base), "head": list(self.head), "starts": list(self.starts),
                "stops": list(self.stops)}


@dataclass(frozen=True)
class ReplayedRequest:
    """One distinct recorded HTTP request (client, server, port, method, URL) judged at base and head."""

    src: str
    dst: str
    port: int
    method: str
    url: str
    count: int
    last_seen_ns: int
    recorded: str  # FORWARDED | DROPPED
    base: str
    head: str

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "port": self.port, "method": self.method, "url": self.url,
                "count": self.count, "last_seen_ns": self.last_seen_ns, "recorded": self.recorded,
                "base": self.base, "head": self.head}


@dataclass(frozen=True)
class FlowReplay:
    window: str  # "24h" as given
    flows_seen: int  # flow events in the window
    connections: int  # distinct (src, dst, port, protocol)
    changed: tuple[ReplayedFlow, ...] = ()  # only those whose verdict differs between base and head
    note: str = ""  # why there is no replay (no flow store, ...)
    requests_seen: int = 0  # recorded HTTP requests in the window
    requests: tuple[ReplayedRequest, ...] = ()  # distinct requests whose verdict differs

    @property
    def would_drop(self) -> tuple[ReplayedFlow, ...]:
        return tuple(f for f in self.changed if f.base == "FORWARDED" and f.head == "DROPPED")

    @property
    def would_allow(self) -> tuple[ReplayedFlow, ...]:
        return tuple(f for f in self.changed if f.base == "DROPPED" and f.head == "FORWARDED")

    @property
    def dropped_flow_count(self) -> int:
        return sum(f.count for f in self.would_drop)

    def to_json(self) -> dict[str, Any]:
        return {"window": self.window, "flows_seen": self.flows_seen, "connections": self.connections,
                "would_drop_flows": self.dropped_flow_count,
                "changed": [f.to_json() for f in self.changed], "note": self.note,
                "requests_seen": self.requests_seen, "requests": [r.to_json() for r in self.requests]}


@dataclass(frozen=True)
class ImpactReport:
    cluster: str
    base: Revision
    head: Revision
    inventory: str  # where pods/namespaces/addresses came from, for the reader
    pods: int
    pairs: tuple[ImpactPair, ...] = ()
    replay: FlowReplay | None = None
    warnings: tuple[str, ...] = ()
    policies_changed: tuple[str, ...] = field(default=())  # "+ kind ns/name", "- ...", "~ ..."
    http: tuple[HttpChange, ...] = ()  # L7 ports whose passing request shapes change

    @property
    def breaking(self) -> tuple[ImpactPair, ...]:
        return tuple(p for p in self.pairs if p.breaks)

    @property
    def opening(self) -> tuple[ImpactPair, ...]:
        return tuple(p for p in self.pairs if not p.breaks)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": IMPACT_FORMAT_VERSION, "cluster": self.cluster,
            "base": self.base.to_json(), "head": self.head.to_json(), "inventory": self.inventory,
            "pods": self.pods, "policies_changed": list(self.policies_changed),
            "pairs": [p.to_json() for p in self.pairs], "http": [h.to_json() for h in self.http],
            "replay": self.replay.to_json() if self.replay else None, "warnings": list(self.warnings),
        }

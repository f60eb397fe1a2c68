"""The service map as data: flows folded into workloads and edges, the page's only input.

A flow's ends become nodes: pods grouped into their workload (the `app` label, else the pod name
without its generated tail) inside their namespace, and the rest as world, an entity (host,
remote-node, ...) or a CIDR. Flows of the same (source, destination, protocol, port) are one edge
that counts each verdict and keeps its last few flows and the rules behind them. Memory stays
bounded whatever the flow rate: edges are as many as distinct connections, each keeps at most
RECENT flows, and the page receives only the edges that changed (`take_changes`), batched.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from meshctl.flows.flow import Flow
from meshctl.report.mermaid import workload

RECENT = 8  # flows kept per edge for the side panel (as short tuples: memory per edge stays small)
VERDICT_KEYS = {1: "forwarded", 2: "dropped", 4: "audit"}


def node_of(pod: str, labels: tuple[str, ...], ip: str) -> tuple[str, str, str, str]:
    """(id, label, namespace, kind) of one end of a flow; kind: workload | world | entity | cidr | ip."""
    if pod:
        namespace, name = workload(pod)
        app = next((lb.split("=", 1)[1] for lb in labels if lb.startswith("k8s:app=")), "")
        name = app or name
        return f"{namespace}/{name}", name, namespace, "workload"
    cidr = next((lb[5:] for lb in labels if lb.startswith("cidr:")), "")
    if cidr:
        return f"cidr:{cidr}", cidr, "", "cidr"
    reserved = [lb.split(":", 1)[1] for lb in labels if lb.startswith("reserved:")]
    if reserved == ["world"] or not labels:
        return ("world", "world", "", "world") if reserved or not ip else (f"ip:{ip}", ip, "", "ip")
    if reserved:
        return f"entity:{reserved[0]}", reserved[0], "", "entity"
    return f"ip:{ip}", ip, "", "ip"


def _protocol(f: Flow) -> str:
    return f.protocol_name.lower()


def edge_id(src: str, dst: str, protocol: str, port: int) -> str:
    return f"{src}>{dst}>{protocol}/{port}"


@dataclass
class Edge:
    src: str
    dst: str
    protocol: str
    port: int
    counts: dict[str, int] = field(default_factory=lambda: {"forwarded": 0, "dropped": 0, "audit": 0})
    last_ns: int = 0
    recent: deque[tuple[Any, ...]] = field(default_factory=lambda: deque(maxlen=RECENT))
    rules: dict[str, str] = field(default_factory=dict)  # verdict -> the newest rule text seen

    @property
    def id(self) -> str:
        return edge_id(self.src, self.dst, self.protocol, self.port)

    @property
    def verdict_class(self) -> str:
        """forwarded | dropped | both | audit (audit only when nothing was dropped or forwarded)."""
        fwd, drop = self.counts["forwarded"] > 0, self.counts["dropped"] > 0
        if fwd and drop:
            return "both"
        if drop:
            return "dropped"
        if fwd:
            return "audit" if self.counts["audit"] else "forwarded"
        return "audit"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.src, "target": self.dst,
                "label": f"{self.protocol}/{self.port}", "protocol": self.protocol, "port": self.port,
                "counts": dict(self.counts), "verdict": self.verdict_class,
                "audit": self.counts["audit"] > 0, "last_ns": self.last_ns}

    def counts_row(self) -> list[Any]:
        """[id, forwarded, dropped, audit, verdict]: what a live update of a known edge needs."""
        c = self.counts
        return [self.id, c["forwarded"], c["dropped"], c["audit"], self.verdict_class]

    def detail(self) -> dict[str, Any]:
        """The side panel: the edge, its rules per verdict and its recent flows (newest first)."""
        keys = ("time_ns", "node", "src", "dst", "src_port", "dst_port", "verdict", "reason", "rule")
        flows = [dict(zip(keys, row, strict=True)) for row in reversed(self.recent)]
        return {**self.to_json(), "rules": dict(self.rules), "flows": flows}


# Where a verdict's rule or isolating policies are written: (flow) -> " (policies/x.yaml:12)" or "".
Locate = Callable[[Flow], str]


def rule_text(f: Flow, locate: Locate | None = None) -> str:
    """What decided this flow: the rule, the isolating policies of a default deny, or the reason;
    with file:line when `locate` knows them."""
    where = locate(f) if locate is not None else ""
    if f.verdict == 4:
        return f"{f.audit_effect}: {f.drop_reason or f.policy or f.reason_name}{where}"
    if f.verdict == 2:
        return f.drop_reason + where
    return f"allowed by {f.policy}{where}" if f.policy else f.reason_name


class ServiceMap:
    """Thread-safe accumulation of flows; `snapshot` for a page load, `take_changes` for SSE."""

    def __init__(self, locate: Locate | None = None) -> None:
        self.locate = locate
        self._lock = threading.Lock()
        self.nodes: dict[str, dict[str, str]] = {}
        self.edges: dict[str, Edge] = {}
        self._new_edges: set[str] = set()  # since the last snapshot or take_changes: sent whole
        self._changed_edges: set[str] = set()  # known to the page: only their counts are sent
        self._changed_nodes: set[str] = set()
        self.flows = 0

    def add(self, flows: Iterable[Flow]) -> None:
        with self._lock:
            for f in flows:
                self._add(f)

    def _add(self, f: Flow) -> None:
        ends = []
        for pod, labels, ip in ((f.src_pod, f.src_labels, f.src_ip), (f.dst_pod, f.dst_labels, f.dst_ip)):
            nid, label, namespace, kind = node_of(pod, labels, ip)
            if nid not in self.nodes:
                self.nodes[nid] = {"id": nid, "label": label, "namespace": namespace, "kind": kind}
                self._changed_nodes.add(nid)
            ends.append(nid)
        eid = edge_id(ends[0], ends[1], _protocol(f), f.dst_port)
        edge = self.edges.get(eid)
        if edge is None:
            edge = self.edges[eid] = Edge(ends[0], ends[1], _protocol(f), f.dst_port)
            self._new_edges.add(eid)
        key = VERDICT_KEYS.get(f.verdict, "forwarded")
        edge.counts[key] += 1
        edge.last_ns = max(edge.last_ns, f.time_ns)
        rule = rule_text(f, self.locate)
        edge.recent.append((f.time_ns, f.node, f.src_pod or f.src_ip, f.dst_pod or f.dst_ip, f.src_port,
                            f.dst_port, f.verdict_name, f.reason_name, rule))
        edge.rules[key] = rule
        if eid not in self._new_edges and eid not in self._changed_edges:
            self._changed_edges.add(eid)
        self.flows += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._new_edges.clear()
            self._changed_edges.clear()
            self._changed_nodes.clear()
            return {"nodes": list(self.nodes.values()), "edges": [e.to_json() for e in self.edges.values()],
                    "flows": self.flows}

    def take_changes(self) -> dict[str, Any] | None:
        """Since the last call: new nodes and edges whole, known edges as counts rows (None:
        nothing changed). A flood on known connections is a few bytes per edge, not per flow."""
        with self._lock:
            if not (self._new_edges or self._changed_edges or self._changed_nodes):
                return None
            out = {"nodes": [self.nodes[n] for n in sorted(self._changed_nodes)],
                   "edges": [self.edges[e].to_json() for e in sorted(self._new_edges)],
                   "counts": [self.edges[e].counts_row() for e in sorted(self._changed_edges)],
                   "flows": self.flows}
            self._new_edges.clear()
            self._changed_edges.clear()
            self._changed_nodes.clear()
            return out

    def detail(self, eid: str) -> dict[str, Any] | None:
        with self._lock:
            edge = self.edges.get(eid)
            return edge.detail() if edge is not None else None

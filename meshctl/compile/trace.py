"""Explain one connection: the verdict at each end and the rules or isolating policies behind it.

Works on a Compiled result only (NodeState + Catalog), through meshctl.verdicts, so what trace
says is what the datapath does with the compiled entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from meshctl.compile.cluster import Compiled
from meshctl.errors import MeshctlError
from meshctl.nodestate import PROTO_SCTP, PROTO_TCP, PROTO_UDP, Direction
from meshctl.verdicts import Verdict, connection_verdict

PROTOCOLS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}


def placeholder_ips(desired: Any) -> dict[str, IPv4Address]:
    """Deterministic addresses for pods without pod_ip: host .10 upward of their node's podCIDR.

    Only for trace (no lab running): pods sorted by name per node, skipping addresses in use.
    """
    cidrs: dict[str, IPv4Network] = {n.name: n.pod_cidr for n in desired.config.nodes}
    used = {p.pod_ip for p in desired.pods if p.pod_ip is not None}
    out: dict[str, IPv4Address] = {}
    nxt: dict[str, int] = {}
    for pod in sorted(desired.pods, key=lambda p: (p.node_name, p.namespace, p.name)):
        if pod.pod_ip is not None or pod.node_name not in cidrs:
            continue
        net = cidrs[pod.node_name]
        i = nxt.get(pod.node_name, 10)
        while net.network_address + i in used:
            i += 1
        if i >= net.num_addresses - 1:
            raise MeshctlError(f"node {pod.node_name}: podCIDR {net} is too small for its pods")
        addr = net.network_address + i
        used.add(addr)
        out[f"{pod.namespace}/{pod.name}"] = addr
        nxt[pod.node_name] = i + 1
    return out


def with_trace_ips(desired: Any, live: Mapping[str, Any] | None = None) -> Any:
    """Pod addresses for tracing: `live` ones (e.g. a running lab's) first, then placeholders."""
    if live:
        desired = desired.with_pod_ips(dict(live))
    return desired.with_pod_ips(placeholder_ips(desired))


def parse_port(text: str) -> tuple[int, int]:
    """`5432` or `53/udp` -> (port, protocol number)."""
    port_s, _, proto_s = str(text).partition("/")
    proto = PROTOCOLS.get((proto_s or "tcp").lower())
    if proto is None or not port_s.isdigit() or not 0 < int(port_s) <= 65535:
        raise MeshctlError(f"bad --port {text!r}: expected N or N/tcp|udp|sctp with N in 1..65535")
    return int(port_s), proto


@dataclass(frozen=True)
class Side:
    direction: Direction
    who: str  # "ns/pod" or address
    verdict: Verdict | None
    explanation: str

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "endpoint": self.who,
            "checked": v is not None,
            "allowed": True if v is None else v.allowed,
            "reason": "no-endpoint" if v is None else v.reason,
            "cookie": 0 if v is None else v.cookie,
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class Trace:
    src: str
    dst: str
    port: int
    protocol: int
    allowed: bool
    egress: Side
    ingress: Side
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        proto = {v: k.upper() for k, v in PROTOCOLS.items()}[self.protocol]
        return {
            "src": self.src,
            "dst": self.dst,
            "port": self.port,
            "protocol": proto,
            "allowed": self.allowed,
            "egress": self.egress.as_dict(),
            "ingress": self.ingress.as_dict(),
            "warnings": list(self.warnings),
        }

    def text(self) -> str:
        proto = {v: k.upper() for k, v in PROTOCOLS.items()}[self.protocol]
        short = lambda s: s.split("/", 1)[1] if "/" in s and not s[0].isdigit() else s  # noqa: E731
        lines = [
            f"{short(self.src)} -> {short(self.dst)}:{self.port}/{proto} "
            f"{'FORWARDED' if self.allowed else 'DROPPED'}"
        ]
        lines.append(f"  egress  {self.egress.who}: {self.egress.explanation}")
        lines.append(f"  ingress {self.ingress.who}: {self.ingress.explanation}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class Tracer:
    """Resolves endpoints (`ns/pod` or IPv4) and explains verdicts over one Compiled result."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self.ip_of = {p.key: p.ip for p in compiled.spec.pods if p.ip is not None}
        self.pod_at = {ip: k for k, ip in self.ip_of.items()}

    def address(self, ref: str) -> tuple[str, IPv4Address]:
        if ref in self.ip_of:
            return ref, self.ip_of[ref]  # type: ignore[return-value]
        try:
            addr = IPv4Address(ref)
        except ValueError:
            if "/" in ref:
                raise MeshctlError(f"unknown pod {ref!r} (or it has no IP)") from None
            raise MeshctlError(f"{ref!r} is neither ns/pod nor an IPv4 address") from None
        return self.pod_at.get(addr, str(addr)), addr

    def explain(self, direction: Direction, who: str, v: Verdict | None) -> str:
        cat = self.compiled.catalog
        if v is None:
            return "not a local endpoint of any node: no check"
        if v.reason in ("allowed", "explicit-deny"):
            origin = cat.cookies.get(v.cookie)
            where = f" ({origin.file}:{origin.line})" if origin and origin.file else ""
            word = "ALLOWED by" if v.allowed else "DENIED by"
            return f"{word} {origin if origin else f'cookie {v.cookie:#x}'}{where}"
        if v.reason == "not-enforced":
            return f"ALLOWED (not enforced: no policy isolates {who} for {direction.label})"
        policies = cat.isolation.get(who, {}).get(direction, ())
        by = ", ".join(policies) if policies else "policyEnforcementMode always"
        return f"DROPPED (default deny: {who} {direction.label} isolated by {by})"

    def trace(self, src: str, dst: str, port: int, protocol: int) -> Trace:
        src_name, src_ip = self.address(src)
        dst_name, dst_ip = self.address(dst)
        cv = connection_verdict(self.compiled.nodes, src_ip, dst_ip, protocol, port)
        egress = Side(
            Direction.EGRESS, src_name, cv.egress, self.explain(Direction.EGRESS, src_name, cv.egress)
        )
        ingress = Side(
            Direction.INGRESS, dst_name, cv.ingress, self.explain(Direction.INGRESS, dst_name, cv.ingress)
        )
        warnings = tuple(
            str(w)
            for w in self.compiled.warnings
            if w.code in ("l7-not-enforced", "l7-ineffective", "empty-section")
        )
        return Trace(src_name, dst_name, port, protocol, cv.allowed, egress, ingress, warnings)

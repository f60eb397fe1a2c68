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
from meshctl.httpverdicts import HttpRequest, HttpVerdict, side_http_verdict
from meshctl.nodestate import PROTO_SCTP, PROTO_TCP, PROTO_UDP, Direction
from meshctl.verdicts import Verdict, connection_verdict

PROTOCOLS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}
# the compile warnings a trace repeats: those that change what a policy does
TRACE_WARNINGS = ("l7-ineffective", "empty-section", "fqdn-not-learned", "fqdn-wildcard")


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
class HttpSide:
    """The L7 proxy's verdict on the traced request at one end (an L7 port there)."""

    verdict: HttpVerdict
    explanation: str

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {"allowed": v.allowed, "status": 200 if v.allowed else 403, "cookie": v.cookie,
                "rule": v.rule, "explanation": self.explanation}


@dataclass(frozen=True)
class Side:
    direction: Direction
    who: str  # "ns/pod" or address
    verdict: Verdict | None
    explanation: str
    http: HttpSide | None = None  # with --http, when the port is an L7 port at this end

    @property
    def allowed(self) -> bool:
        l4 = self.verdict is None or self.verdict.allowed
        return l4 and (self.http is None or self.http.verdict.allowed)

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "endpoint": self.who,
            "checked": v is not None,
            "allowed": True if v is None else v.allowed,
            "reason": "no-endpoint" if v is None else v.reason,
            "cookie": 0 if v is None else v.cookie,
            "explanation": self.explanation,
            **({"http": self.http.as_dict()} if self.http else {}),
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
    request: HttpRequest | None = None  # --http

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
            **({"http": {"method": self.request.method, "path": self.request.path, "host": self.request.host,
                         "headers": [f"{n}: {v}" for n, v in self.request.headers]}} if self.request else {}),
        }

    def text(self) -> str:
        proto = {v: k.upper() for k, v in PROTOCOLS.items()}[self.protocol]
        short = lambda s: s.split("/", 1)[1] if "/" in s and not s[0].isdigit() else s  # noqa: E731
        request = f" {self.request.line}" if self.request else ""
        lines = [
            f"{short(self.src)} -> {short(self.dst)}:{self.port}/{proto}{request} "
            f"{'FORWARDED' if self.allowed else 'DROPPED'}"
        ]
        lines.append(f"  egress  {self.egress.who}: {self.egress.explanation}")
        lines.append(f"  ingress {self.ingress.who}: {self.ingress.explanation}")
        for side in (self.egress, self.ingress):
            if side.http is not None:
                lines.append(f"  L7 {side.direction.label:<7} {side.who}: {side.http.explanation}")
        if self.request and self.egress.http is None and self.ingress.http is None:
            lines.append(f"  L7: {self.port}/{proto} is not an L7 port at either end: the proxy does not "
                         "look at the request")
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
            word = "ALLOWED by" if v.allowed else "DENIED by"
            return f"{word} {cat.rule_text(v.cookie)}"
        if v.reason == "not-enforced":
            return f"ALLOWED (not enforced: no policy isolates {who} for {direction.label})"
        policies = cat.isolation.get(who, {}).get(direction, ())
        by = ", ".join(policies) if policies else "policyEnforcementMode always"
        return f"DROPPED (default deny: {who} {direction.label} isolated by {by})"

    def explain_http(self, request: HttpRequest, v: HttpVerdict) -> str:
        cat = self.compiled.catalog
        if v.allowed:
            rule = None if v.rule < 0 else v.rule
            every = " (an L4 allow of this peer: every request)" if rule is None else ""
            return f"{request.line} ALLOWED by {cat.rule_text(v.cookie, rule)}{every}"
        judges = ", ".join(cat.rule_text(c) for c in v.judges) or "no rule for this peer"
        return f"{request.line} DENIED (403 Access denied): no L7 rule of {judges} matches"

    def trace(self, src: str, dst: str, port: int, protocol: int,
              request: HttpRequest | None = None) -> Trace:
        """The connection's verdict at both ends; with `request`, also the L7 proxy's verdict on
        it at each end where the port is an L7 port and the connection passes L4."""
        src_name, src_ip = self.address(src)
        dst_name, dst_ip = self.address(dst)
        if request is not None and protocol != PROTO_TCP:
            raise MeshctlError("--http: HTTP rules apply to TCP ports only")
        cv = connection_verdict(self.compiled.nodes, src_ip, dst_ip, protocol, port)
        sides = []
        for direction, name, v, endpoint, peer in ((Direction.EGRESS, src_name, cv.egress, src_ip, dst_ip),
                                                   (Direction.INGRESS, dst_name, cv.ingress, dst_ip, src_ip)):
            http = None
            if request is not None and v is not None and v.allowed:
                hv = side_http_verdict(self.compiled.nodes, endpoint, direction, peer, port, request)
                http = None if hv is None else HttpSide(hv, self.explain_http(request, hv))
            sides.append(Side(direction, name, v, self.explain(direction, name, v), http))
        egress, ingress = sides
        warnings = tuple(
            str(w)
            for w in self.compiled.warnings
            if w.code in TRACE_WARNINGS
        )
        allowed = egress.allowed and ingress.allowed
        return Trace(src_name, dst_name, port, protocol, allowed, egress, ingress, warnings, request)

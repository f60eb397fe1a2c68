"""L7 in the impact report: which HTTP request shapes start or stop passing, and recorded HTTP
requests replayed through both revisions (meshctl.httpverdicts over each compile's NodeStates).

A shape is one `rules.http[]` item (`GET /api/v1/users/[0-9]+`). Per (client pod, server pod,
L7 port) that passes L4 in both revisions (a flip at L4 is already a connection pair), the shapes
each revision lets through are compared; "every request" stands for a port without L7 rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from typing import Any

from meshctl.flows.flow import L7_REQUEST
from meshctl.httpverdicts import HttpRequest, peer_policies, side_http_verdict
from meshctl.impact.inventory import replay_addresses
from meshctl.impact.model import HttpChange, ReplayedRequest
from meshctl.nodestate import PROTO_TCP, Direction, NodeState
from meshctl.verdicts import connection_verdict

EVERY = "every request"


def _shapes(nodes: Mapping[str, NodeState], endpoint: IPv4Address, direction: Direction, peer_ip: IPv4Address,
            port: int) -> tuple[str, ...]:
    """What the proxy lets through on this port for this peer: shapes, or (EVERY,)."""
    policies = peer_policies(nodes, endpoint, direction, peer_ip, port) or ()
    if any(not p.rules for p in policies):
        return (EVERY,)
    return tuple(sorted({r.text for p in policies for r in p.rules})) or (EVERY,)


def _l7_ports(nodes: Mapping[str, NodeState]) -> set[tuple[IPv4Address, Direction, int]]:
    """(endpoint, direction, first port) of every L7 port or range."""
    return {(p.endpoint, p.direction, p.port) for st in nodes.values() for p in st.http}


def http_changes(base: Mapping[str, NodeState], head: Mapping[str, NodeState],
                 pods: Sequence[Any]) -> tuple[HttpChange, ...]:
    """Per client pod, server pod and L7 port: the request shapes that pass at base and at head."""
    ip_of = {p.name: p.ip for p in pods}
    name_of = {ip: name for name, ip in ip_of.items()}
    out = []
    for endpoint, direction, port in sorted(_l7_ports(base) | _l7_ports(head)):
        if endpoint not in name_of:
            continue
        for peer_ip in sorted(ip_of.values()):
            if peer_ip == endpoint:
                continue
            src, dst = (peer_ip, endpoint) if direction == Direction.INGRESS else (endpoint, peer_ip)
            if not (connection_verdict(base, src, dst, PROTO_TCP, port).allowed
                    and connection_verdict(head, src, dst, PROTO_TCP, port).allowed):
                continue
            before = _shapes(base, endpoint, direction, peer_ip, port)
            after = _shapes(head, endpoint, direction, peer_ip, port)
            if before != after:
                out.append(HttpChange(name_of[src], name_of[dst], port, direction.label, before, after))
    return tuple(out)


def request_allowed(nodes: Mapping[str, NodeState], src: IPv4Address, dst: IPv4Address, port: int,
                    request: HttpRequest) -> bool:
    """Whether the connection and the request pass: L4 at both ends, then each end's proxy."""
    if not connection_verdict(nodes, src, dst, PROTO_TCP, port).allowed:
        return False
    for endpoint, direction, peer_ip in ((src, Direction.EGRESS, dst), (dst, Direction.INGRESS, src)):
        v = side_http_verdict(nodes, endpoint, direction, peer_ip, port, request)
        if v is not None and not v.allowed:
            return False
    return True


def replay_requests(flows: Sequence[Any], base: Mapping[str, NodeState], head: Mapping[str, NodeState],
                    addresses: Mapping[str, IPv4Address]) -> tuple[int, tuple[ReplayedRequest, ...]]:
    """Recorded http-request flows judged at base and head: (requests replayed, the changed ones).
    Recorded requests keep method, path and host, not headers: a rule that needs a header judges
    them as sent without it."""
    groups: dict[tuple[str, str, int, str, str, str], list[Any]] = {}
    for f in flows:
        if f.l7 != L7_REQUEST:
            continue
        key = (f.src_pod or f.src_ip, f.dst_pod or f.dst_ip, f.dst_port, f.http_method, f.http_url,
               f.http_host)
        groups.setdefault(key, []).append(f)
    changed = []
    for (src, dst, port, method, url, host), group in groups.items():
        newest = max(group, key=lambda f: f.time_ns)
        ends = replay_addresses(addresses, src, dst, newest)
        if ends is None:
            continue
        src_ip, dst_ip = ends
        request = HttpRequest(method, url, host)
        before = request_allowed(base, src_ip, dst_ip, port, request)
        after = request_allowed(head, src_ip, dst_ip, port, request)
        if before != after:
            changed.append(ReplayedRequest(
                src, dst, port, method, url, len(group), newest.time_ns,
                "FORWARDED" if newest.verdict == 1 else "DROPPED",
                "FORWARDED" if before else "DROPPED", "FORWARDED" if after else "DROPPED"))
    changed.sort(key=lambda r: (r.head != "DROPPED", -r.count, r.dst, r.port, r.src, r.url))
    return sum(len(g) for g in groups.values()), tuple(changed)

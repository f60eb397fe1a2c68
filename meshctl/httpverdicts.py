"""What a node's L7 proxy decides for one HTTP request, computed from NodeState alone.

Emulates the RBAC the node's Envoy runs (meshctl.dataplane.envoy_config): a request on an L7
port passes when one HttpPolicy of its endpoint, direction and port whose peer matches has a
rule whose every field matches: method, path and host as full matches of extended regular
expressions (RE2 in Envoy; the plan refuses what RE2 cannot compile), headers present or equal.
`policy trace --http`, `impact` and the tests use it; a privileged test checks it against Envoy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address

from meshctl.errors import MeshctlError
from meshctl.nodestate import Direction, HttpPolicy, HttpRule, NodeState, ReservedIdentity
from meshctl.verdicts import find_endpoint, ipcache_lookup

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


@dataclass(frozen=True)
class HttpRequest:
    """The parts of a request an L7 rule can look at (header names lower case)."""

    method: str
    path: str
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str, headers: Sequence[str] = (), host: str = "") -> HttpRequest:
        """`GET /api/v1/users/42` and `Name: value` headers (a `Host` header sets the host)."""
        method, _, path = text.strip().partition(" ")
        if not method or not path.startswith("/") or " " in path.strip():
            raise MeshctlError(f"--http {text!r}: expected METHOD /path, e.g. \"GET /api/v1/users/42\"")
        pairs = []
        for h in headers:
            name, sep, value = h.partition(":")
            if not sep or not name.strip():
                raise MeshctlError(f"--header {h!r}: expected \"Name: value\"")
            pairs.append((name.strip().lower(), value.strip()))
        host = next((v for n, v in pairs if n == "host"), host)
        return cls(method, path.strip(), host, tuple(p for p in pairs if p[0] != "host"))

    @property
    def line(self) -> str:
        return f"{self.method} {self.path}"

    def header(self, name: str) -> str | None:
        name = name.lower()
        if name == "host":
            return self.host or None
        return next((v for n, v in self.headers if n == name), None)


@dataclass(frozen=True)
class HttpVerdict:
    """allowed by `cookie`'s rule `rule` (-1: the port's L4 allow lets every request through);
    denied: `judges` are the cookies of the L7 rules that were looked at and none matched."""

    allowed: bool
    cookie: int = 0
    rule: int = -1
    judges: tuple[int, ...] = ()


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def rule_matches(rule: HttpRule, request: HttpRequest) -> bool:
    for pattern, value in ((rule.method, request.method), (rule.path, request.path),
                           (rule.host, request.host)):
        if pattern and _regex(pattern).fullmatch(value) is None:
            return False
    for h in rule.headers:
        name, sep, want = h.partition(": ")
        got = request.header(name)
        if got is None or (sep and got != want):
            return False
    for name, want in rule.header_matches:
        got = request.header(name)
        if got is None or (want and got != want):
            return False
    return True


def port_policies(http: Iterable[HttpPolicy], endpoint: IPv4Address, direction: Direction,
                  port: int) -> list[HttpPolicy]:
    """The HttpPolicies of one L7 port of one endpoint (every peer)."""
    return sorted(p for p in http if p.endpoint == endpoint and p.direction == direction
                  and p.port <= port <= p.last_port)


def peer_matches(p: HttpPolicy, peer: int) -> bool:
    return p.identity in (ReservedIdentity.ANY, peer)


def http_verdict(policies: Iterable[HttpPolicy], request: HttpRequest) -> HttpVerdict:
    """The proxy's verdict on `request` over the HttpPolicies of its port and peer."""
    judges: list[int] = []
    for p in policies:
        if not p.rules:
            return HttpVerdict(True, p.cookie)
        for i, rule in enumerate(p.rules):
            if rule_matches(rule, request):
                return HttpVerdict(True, p.cookie, i)
        judges.append(p.cookie)
    return HttpVerdict(False, judges=tuple(dict.fromkeys(judges)))


def peer_policies(states: Mapping[str, NodeState], endpoint: IPv4Address, direction: Direction,
                  peer_ip: IPv4Address, port: int) -> list[HttpPolicy] | None:
    """The HttpPolicies of one L7 port of `endpoint` that match the peer at `peer_ip` (its
    identity from the endpoint's node's ipcache, as the proxy's RBAC sees addresses); None when
    the port is not an L7 port there (or the endpoint is on no node)."""
    node = find_endpoint(states, endpoint)
    if node is None:
        return None
    state = states[node]
    policies = port_policies(state.http, endpoint, direction, port)
    if not policies:
        return None
    peer = ipcache_lookup(state.ipcache, peer_ip)
    return [p for p in policies if peer_matches(p, peer)]


def side_http_verdict(states: Mapping[str, NodeState], endpoint: IPv4Address, direction: Direction,
                      peer_ip: IPv4Address, port: int, request: HttpRequest) -> HttpVerdict | None:
    """The L7 verdict at one side of a connection; None when its port is not an L7 port there."""
    policies = peer_policies(states, endpoint, direction, peer_ip, port)
    return None if policies is None else http_verdict(policies, request)

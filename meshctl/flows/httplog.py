"""HTTP flow records from the node's Envoy: its JSON access log -> http-request/http-response rows.

Envoy writes one JSON object per request when the request ends (meshctl.dataplane.envoy_config
ACCESS_LOG_FIELDS). The agent tails that file and makes two records of each line, as Hubble
does: the request (at its start; DROPPED when the proxy's RBAC denied it) and the response (at
its first byte, with status and latency). The rule that allowed a request comes from the RBAC
policy name Envoy logs (its cookie and rule index); a denied request names the policies whose
L7 rules it failed, from the HTTP rules the proxy runs (the routes file).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from meshctl.dataplane.envoy import ProxyFiles, routes_http
from meshctl.dataplane.envoy_config import parse_policy_name
from meshctl.flows.dims import Dimensions
from meshctl.flows.enrich import EnrichContext, labels_text
from meshctl.flows.flow import (
    L7_REQUEST,
    L7_RESPONSE,
    REASON_ALLOWED,
    REASON_L7_DENIED,
    VERDICT_DROPPED,
    VERDICT_FORWARDED,
)
from meshctl.httpverdicts import peer_matches, port_policies
from meshctl.nodestate import PROTO_TCP, Direction, HttpPolicy, ReservedIdentity

log = logging.getLogger(__name__)
# The first columns of every proxy record (HTTP and DNS): the connection's, as a flow has them.
L7_COMMON_FIELDS = (
    "time_ns", "verdict", "reason", "direction", "protocol", "src_port", "dst_port", "src_peer", "dst_peer",
    "attribution", "l7",
)
# Columns of a stored HTTP row (the `http` table), in order.
HTTP_FIELDS = (*L7_COMMON_FIELDS, "method", "url", "host", "version", "status", "latency_ns")
HttpRow = tuple[object, ...]


@dataclass(frozen=True)
class LogLine:
    """One access log object, typed."""

    start_ns: int
    method: str
    path: str
    host: str
    protocol: str
    status: int
    latency_ns: int
    client: tuple[str, int]
    server: tuple[str, int]
    policy: str  # the RBAC policy that allowed it ("" when none did)
    denied: bool

    @classmethod
    def parse(cls, text: str) -> LogLine | None:
        """None for a line that is not one of our records (a partial write, a foreign format)."""
        try:
            d = json.loads(text)
            client, server = parse_address(d["client"]), parse_address(d["server"])
            latency_us = d.get("latency_us")
            return cls(
                start_ns=int(float(d["start"]) * 1e9), method=str(d.get("method") or ""),
                path=str(d.get("path") or ""), host=str(d.get("authority") or ""),
                protocol=str(d.get("protocol") or ""), status=int(d.get("status") or 0),
                latency_ns=int(latency_us) * 1000 if isinstance(latency_us, int) else 0,
                client=client, server=server, policy=str(d.get("policy") or ""),
                denied=d.get("rbac") == "denied",
            )
        except (ValueError, KeyError, TypeError):
            return None


def parse_address(text: str) -> tuple[str, int]:
    ip, _, port = str(text).rpartition(":")
    IPv4Address(ip)
    return ip, int(port)


class AccessLogTail:
    """New complete lines of a file that only grows; starts over when it was replaced or cut."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ino = 0
        self._offset = 0
        self._partial = b""

    def lines(self) -> list[str]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if st.st_ino != self._ino or st.st_size < self._offset:
            self._ino, self._offset, self._partial = st.st_ino, 0, b""
        if st.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(st.st_size - self._offset)
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [raw.decode(errors="replace") for raw in complete if raw.strip()]


class ProxyRecords:
    """A proxy's log lines -> stored rows for one node, named from the enrich context.

    `last_ns` is the newest key stored: keys increase, and a restarted agent, which reads the log
    from its start again, skips the lines it stored before."""

    def __init__(self, ctx: EnrichContext, dims: Dimensions, last_ns: int = 0) -> None:
        self.dims = dims
        self.last_ns = self._stored_until = last_ns
        self.set_context(ctx)

    def set_context(self, ctx: EnrichContext) -> None:
        self.ctx = ctx
        by_pod = {pod: ident for ident, info in ctx.catalog.identities.items() for pod in info.pods}
        self._identity = {ip: by_pod.get(pod, ReservedIdentity.WORLD) for ip, pod in ctx.pod_by_ip.items()}

    def keyed(self, common: tuple[object, ...], *timed: tuple[int, tuple[object, ...]]) -> list[HttpRow]:
        """The rows of one log line: its request and response (time, columns) after the columns
        they share, each keyed after the newest key so far (the store's keys increase)."""
        out: list[HttpRow] = []
        for t, tail in timed:
            self.last_ns = max(t, self.last_ns + 1)
            out.append((self.last_ns, *common, *tail))
        return out

    def peer(self, ip: str) -> int:
        identity = self._identity.get(ip, ReservedIdentity.WORLD)
        info = self.ctx.catalog.identities.get(identity)
        return int(self.dims.peer(ip, identity, self.ctx.pod_by_ip.get(ip, ""),
                                  labels_text(info.labels) if info else ""))


class HttpRecords(ProxyRecords):
    """Access log lines -> stored HTTP rows for one node."""

    def __init__(self, ctx: EnrichContext, dims: Dimensions, last_ns: int = 0) -> None:
        super().__init__(ctx, dims, last_ns)
        self.http: frozenset[HttpPolicy] = frozenset()
        self._routes_mark: tuple[int, int] = (0, 0)

    def refresh_rules(self, files: ProxyFiles) -> None:
        """Read the proxy's rules again when the routes file was replaced (an apply wrote it)."""
        try:
            st = os.stat(files.routes)
        except FileNotFoundError:
            self.http, self._routes_mark = frozenset(), (0, 0)
            return
        if (st.st_ino, st.st_mtime_ns) != self._routes_mark:
            self.http, self._routes_mark = routes_http(files), (st.st_ino, st.st_mtime_ns)

    def _judged(self, line: LogLine) -> tuple[Direction, str, str]:
        """Direction, the allowing rule and the policies whose rules a denied request failed."""
        named = parse_policy_name(line.policy) if line.policy else None
        if named is not None:
            cookie, rule, direction = named
            l4_allow = any(p.cookie == cookie and not p.rules for p in self.http)  # every request
            return direction, self.ctx.catalog.rule_text(cookie, None if l4_allow else rule), ""
        client, server = IPv4Address(line.client[0]), IPv4Address(line.server[0])
        for direction, endpoint, peer_ip in ((Direction.INGRESS, server, line.client[0]),
                                             (Direction.EGRESS, client, line.server[0])):
            policies = port_policies(self.http, endpoint, direction, line.server[1])
            if policies:
                peer = self._identity.get(peer_ip, ReservedIdentity.WORLD)
                judges = dict.fromkeys(self.ctx.catalog.rule_text(p.cookie, None) for p in policies
                                       if peer_matches(p, peer))
                return direction, "", ",".join(judges)
        return Direction.INGRESS, "", ""

    def rows(self, lines: Iterable[str]) -> list[HttpRow]:
        out: list[HttpRow] = []
        for text in lines:
            line = LogLine.parse(text)
            if line is None:
                log.debug("access log: not a record: %.200s", text)
                continue
            if line.start_ns <= self._stored_until:
                continue
            direction, rule, judges = self._judged(line)
            verdict = VERDICT_DROPPED if line.denied else VERDICT_FORWARDED
            reason = REASON_L7_DENIED if line.denied else REASON_ALLOWED
            src, dst = self.peer(line.client[0]), self.peer(line.server[0])
            attribution = self.dims.attribution(rule, judges)
            common = (verdict, reason, int(direction), PROTO_TCP, line.client[1], line.server[1], src, dst,
                      attribution)
            request = (L7_REQUEST, line.method, line.path, line.host, line.protocol, 0, 0)
            response = (L7_RESPONSE, line.method, line.path, line.host, line.protocol, line.status,
                        line.latency_ns)
            out += self.keyed(common, (line.start_ns, request), (line.start_ns + line.latency_ns, response))
        return out


"""DNS flow records from the node's DNS proxy: its query log -> dns-request/dns-response rows, and
the names each answered address had.

The proxy (meshctl.proxy.dns) writes one JSON line per query, before the pod gets the answer.
The agent tails that file and makes two records of each line, as Hubble does: the query (DROPPED
when no DNS rule allowed it, naming the rules that apply) and the answer (rcode, addresses, TTL,
latency). The addresses of every answer keep the names they were answered for, so the flows
that follow to them carry the name (`--to-fqdn`), allowed or dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from meshctl.flows.dims import Dimensions
from meshctl.flows.enrich import EnrichContext
from meshctl.flows.flow import (
    L7_DNS_REQUEST,
    L7_DNS_RESPONSE,
    REASON_ALLOWED,
    REASON_L7_DENIED,
    VERDICT_DROPPED,
    VERDICT_FORWARDED,
)
from meshctl.flows.httplog import L7_COMMON_FIELDS, ProxyRecords, parse_address
from meshctl.nodestate import PROTO_TCP, PROTO_UDP, Direction

log = logging.getLogger(__name__)
# Columns of a stored DNS row (the `dns` table), in order.
DNS_FIELDS = (*L7_COMMON_FIELDS, "query", "qtypes", "rcode", "ips", "ttl", "latency_ns")
DNS_TEXT_FIELDS = ("query", "qtypes", "rcode", "ips")
DnsRow = tuple[object, ...]
MAX_NAMED = 65536  # addresses whose names are kept (the oldest go first)


@dataclass(frozen=True)
class QueryLine:
    """One query log object, typed."""

    time_ns: int
    client: tuple[str, int]
    server: tuple[str, int]
    protocol: int
    query: str
    qtype: str
    verdict: str  # FORWARDED, DENIED, ERROR
    rcode: str
    ips: tuple[str, ...]
    ttl: int
    latency_ns: int
    cookie: int  # the rule that allowed it, or the first that applies to a denied one

    @classmethod
    def parse(cls, text: str) -> QueryLine | None:
        """None for a line that is not one of our records."""
        try:
            d = json.loads(text)
            return cls(
                time_ns=int(float(d["time"]) * 1e9), client=parse_address(d["client"]),
                server=parse_address(d["server"]),
                protocol=PROTO_TCP if d["protocol"] == "tcp" else PROTO_UDP,
                query=str(d["query"]), qtype=str(d.get("qtype") or ""), verdict=str(d["verdict"]),
                rcode=str(d.get("rcode") or "SERVFAIL"), ips=tuple(str(ip) for ip in d.get("answers") or ()),
                ttl=int(d.get("ttl") or 0), latency_ns=int(d.get("latency_us") or 0) * 1000,
                cookie=int(d.get("cookie") or 0),
            )
        except (ValueError, KeyError, TypeError):
            return None


class DnsRecords(ProxyRecords):
    """Query log lines -> stored DNS rows for one node; `names` (address -> the names it was
    answered for) is what the enricher names flows with."""

    def __init__(self, ctx: EnrichContext, dims: Dimensions, last_ns: int = 0) -> None:
        super().__init__(ctx, dims, last_ns)
        self.names: dict[str, tuple[str, ...]] = {}
        self.renamed: set[str] = set()  # addresses whose names changed since the caller last looked

    def _learn_names(self, line: QueryLine) -> None:
        for ip in line.ips:
            known = self.names.get(ip, ())
            if line.query not in known:
                self.names.pop(ip, None)  # re-inserted last: the oldest addresses leave first
                self.names[ip] = tuple(sorted((*known, line.query)))
                self.renamed.add(ip)
        while len(self.names) > MAX_NAMED:
            del self.names[next(iter(self.names))]

    def rows(self, lines: Iterable[str]) -> list[DnsRow]:
        out: list[DnsRow] = []
        for text in lines:
            line = QueryLine.parse(text)
            if line is None:
                log.debug("query log: not a record: %.200s", text)
                continue
            self._learn_names(line)  # also for lines stored before a restart: flows need the names
            if line.time_ns <= self._stored_until:
                continue
            rule = self.ctx.catalog.rule_text(line.cookie, None) if line.cookie else ""
            denied = line.verdict == "DENIED"
            verdict = VERDICT_DROPPED if denied else VERDICT_FORWARDED
            reason = REASON_L7_DENIED if denied else REASON_ALLOWED
            attribution = self.dims.attribution("", rule) if denied else self.dims.attribution(rule, "")
            common = (verdict, reason, int(Direction.EGRESS), line.protocol, line.client[1], line.server[1],
                      self.peer(line.client[0]), self.peer(line.server[0]), attribution)
            asked = (line.query, line.qtype)
            request = (L7_DNS_REQUEST, *asked, "", "", 0, 0)
            response = (L7_DNS_RESPONSE, *asked, line.rcode, ",".join(line.ips), line.ttl, line.latency_ns)
            out += self.keyed(common, (line.time_ns, request), (line.time_ns + line.latency_ns, response))
        return out

"""The Flow record: one datapath verdict with names attached, as stored and shown.

A Flow is plain data (no ctypes): the enricher makes it from a raw ringbuf record, the store
writes and reads it, renderers format it. Numbers stay next to names so filters can use both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

VERDICTS = {1: "FORWARDED", 2: "DROPPED", 4: "AUDIT"}  # Hubble's numbers
VERDICT_NUMBERS = {v: k for k, v in VERDICTS.items()}
VERDICT_FORWARDED, VERDICT_DROPPED, VERDICT_AUDIT = 1, 2, 4
DIRECTIONS = {0: "ingress", 1: "egress"}
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP"}
PROTOCOL_NUMBERS = {v.lower(): k for k, v in PROTOCOLS.items()}
# enum flow_reason in bpf/lib/common.h
REASONS = {
    0: "allowed",
    1: "not enforced",
    2: "default deny",
    3: "explicit deny",
    4: "IPv6 dropped",
    5: "malformed packet",
    6: "no endpoint",
    7: "no service backend",
    8: "L7 proxy down",
    9: "L7 port outside the proxy",
    10: "to L7 proxy",
    11: "L7 policy denied",  # the proxy's verdict on a request (HTTP records), not a datapath one
}
REASON_ALLOWED = 0
REASON_NOT_ENFORCED = 1
REASON_DEFAULT_DENY = 2
REASON_EXPLICIT_DENY = 3
REASON_L7_DENIED = 11
# An HTTP or DNS record (meshctl.flows.httplog, meshctl.flows.dnslog): Hubble's l7 flow types.
L7_NONE, L7_REQUEST, L7_RESPONSE, L7_DNS_REQUEST, L7_DNS_RESPONSE = 0, 1, 2, 3, 4
L7_TYPES = {L7_REQUEST: "http-request", L7_RESPONSE: "http-response", L7_DNS_REQUEST: "dns-request",
            L7_DNS_RESPONSE: "dns-response"}
L7_KEYS = ("l7", "http_method", "http_url", "http_host", "http_protocol", "http_status", "latency_ns",
           "dns_query", "dns_qtypes", "dns_rcode", "dns_ips", "dns_ttl")
TCP_FLAG_NAMES = ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x20, "URG"))


def protocol_name(number: int) -> str:
    return PROTOCOLS.get(number, str(number))


def tcp_flags_text(flags: int) -> str:
    """`SYN, ACK` style, in hubble's order."""
    return ", ".join(name for bit, name in TCP_FLAG_NAMES if flags & bit)


@dataclass(frozen=True)
class Flow:
    """One verdict on one packet (a new connection or a drop), with its names."""

    time_ns: int  # wall clock, ns since the epoch
    node: str
    verdict: int  # 1 FORWARDED, 2 DROPPED, 4 AUDIT (what staged policies would do differently)
    reason: int  # enum flow_reason
    direction: int  # 0 ingress, 1 egress (policy direction evaluated)
    protocol: int
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    src_identity: int
    dst_identity: int
    tcp_flags: int = 0
    length: int = 0
    cookie: int = 0
    src_pod: str = ""  # "namespace/pod", "" when not a pod
    dst_pod: str = ""
    src_labels: tuple[str, ...] = ()
    dst_labels: tuple[str, ...] = ()
    policy: str = ""  # the matched rule, e.g. "CiliumNetworkPolicy demo/x ingress[0]"
    isolated_by: tuple[str, ...] = field(default=())  # default deny: the isolating policies;
    # an HTTP request no rule allowed: the policies whose L7 rules it did not match
    l7: int = L7_NONE  # L7_REQUEST | L7_RESPONSE: an HTTP record from the node's proxy
    http_method: str = ""
    http_url: str = ""  # the path with its query, as the request line had it
    http_host: str = ""
    http_protocol: str = ""  # HTTP/1.1
    http_status: int = 0  # the response's code (responses only)
    latency_ns: int = 0  # request start to the response's first byte (responses only)
    dns_query: str = ""  # the name asked (DNS records)
    dns_qtypes: str = ""  # A, AAAA, ...
    dns_rcode: str = ""  # the answer's code (responses only): NOERROR, REFUSED, ...
    dns_ips: tuple[str, ...] = ()  # the answer's addresses
    dns_ttl: int = 0
    src_names: tuple[str, ...] = ()  # the DNS names this address was answered for (Hubble's)
    dst_names: tuple[str, ...] = ()

    @property
    def verdict_name(self) -> str:
        return VERDICTS.get(self.verdict, str(self.verdict))

    @property
    def direction_name(self) -> str:
        return DIRECTIONS.get(self.direction, str(self.direction))

    @property
    def protocol_name(self) -> str:
        return protocol_name(self.protocol)

    @property
    def reason_name(self) -> str:
        return REASONS.get(self.reason, f"reason {self.reason}")

    @property
    def subject(self) -> str:
        """The local endpoint whose policy decided: the receiver on ingress, the sender on egress."""
        pod = self.dst_pod if self.direction == 0 else self.src_pod
        return pod or (self.dst_ip if self.direction == 0 else self.src_ip)

    @property
    def audit_effect(self) -> str:
        """An AUDIT flow: `would drop` or `would allow` once its staged policies are enforced."""
        if self.verdict != VERDICT_AUDIT:
            return ""
        return "would allow" if self.reason in (REASON_ALLOWED, REASON_NOT_ENFORCED) else "would drop"

    @property
    def drop_reason(self) -> str:
        """Why it was dropped (or, for AUDIT, would be), naming the rule or the isolating
        policies; "" when forwarded."""
        if self.verdict not in (VERDICT_DROPPED, VERDICT_AUDIT) or self.audit_effect == "would allow":
            return ""
        if self.reason == REASON_EXPLICIT_DENY:
            return f"denied by {self.policy}" if self.policy else f"explicit deny (cookie {self.cookie:#x})"
        if self.reason == REASON_L7_DENIED:
            by = f" of {', '.join(self.isolated_by)}" if self.isolated_by else ""
            return f"no {'DNS' if self.is_dns else 'L7'} rule{by} matches"
        if self.reason == REASON_DEFAULT_DENY:
            who = f"{self.subject} {self.direction_name} isolated"
            if self.isolated_by:
                return f"default deny: {who} by {', '.join(self.isolated_by)}"
            return f"default deny: {who}"
        return self.reason_name

    @property
    def l7_type(self) -> str:
        return L7_TYPES.get(self.l7, "")

    @property
    def is_dns(self) -> bool:
        return self.l7 in (L7_DNS_REQUEST, L7_DNS_RESPONSE)

    @property
    def l7_summary(self) -> str:
        """Hubble's: `DNS Query api.stripe.com A`, `DNS Answer "203.0.113.10" TTL: 1 (api.stripe.com
        A)`, `DNS Answer RCode: REFUSED (www.google.com A)`; or the HTTP summary."""
        if not self.is_dns:
            return self.http_summary
        asked = f"{self.dns_query} {self.dns_qtypes}"
        if self.l7 == L7_DNS_REQUEST:
            return f"DNS Query {asked}"
        if self.dns_rcode != "NOERROR":
            return f"DNS Answer RCode: {self.dns_rcode} ({asked})"
        return f'DNS Answer "{",".join(self.dns_ips)}" TTL: {self.dns_ttl} ({asked})'

    @property
    def http_summary(self) -> str:
        """Hubble's: `HTTP/1.1 GET /api/users` and `HTTP/1.1 200 2ms (GET /api/users)`."""
        request = f"{self.http_method} {self.http_url}"
        if self.l7 == L7_RESPONSE:
            return f"{self.http_protocol} {self.http_status} {self.latency_ns // 1_000_000}ms ({request})"
        return f"{self.http_protocol} {request}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: numbers and their names, hubble-like keys (HTTP fields under `l7`)."""
        d = asdict(self)
        for key in L7_KEYS:
            del d[key]
        if self.is_dns:
            dns: dict[str, Any] = {"query": self.dns_query, "qtypes": [self.dns_qtypes]}
            if self.l7 == L7_DNS_RESPONSE:
                dns.update(rcode=self.dns_rcode, ips=list(self.dns_ips), ttl=self.dns_ttl)
            d["l7"] = {"type": "REQUEST" if self.l7 == L7_DNS_REQUEST else "RESPONSE",
                       "latency_ns": self.latency_ns, "dns": dns}
        elif self.l7:
            http: dict[str, Any] = {"method": self.http_method, "url": self.http_url, "host": self.http_host,
                                    "protocol": self.http_protocol}
            if self.l7 == L7_RESPONSE:
                http["code"] = self.http_status
            d["l7"] = {"type": "REQUEST" if self.l7 == L7_REQUEST else "RESPONSE",
                       "latency_ns": self.latency_ns, "http": http}
        d["src_labels"] = list(self.src_labels)
        d["dst_labels"] = list(self.dst_labels)
        d["isolated_by"] = list(self.isolated_by)
        d["src_names"] = list(self.src_names)
        d["dst_names"] = list(self.dst_names)
        d.update(
            verdict=self.verdict_name, direction=self.direction_name, protocol=self.protocol_name,
            reason=self.reason_name, drop_reason=self.drop_reason, tcp_flags=tcp_flags_text(self.tcp_flags),
        )
        if self.verdict == VERDICT_AUDIT:
            d["audit"] = self.audit_effect
        return d

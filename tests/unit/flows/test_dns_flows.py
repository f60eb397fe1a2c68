"""DNS flow records without the proxy: query log lines as meshctl.proxy.dns writes them -> rows ->
store -> observe; and the names answered addresses carry on the datapath's flows.

The privileged FQDN test checks the same path with the real proxy and agent.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from prometheus_client import generate_latest

from meshctl.catalog import Catalog, IdentityInfo, RuleOrigin
from meshctl.flows.dnslog import DNS_FIELDS, DnsRecords
from meshctl.flows.enrich import EVENT, EnrichContext, Enricher
from meshctl.flows.filters import FilterError, FlowFilter
from meshctl.flows.flow import REASON_DEFAULT_DENY, VERDICT_DROPPED
from meshctl.flows.metrics import FlowCounters, registry_for
from meshctl.flows.render import compact, table
from meshctl.flows.store import FlowStore, query_all
from meshctl.nodestate import FrozenMap

PAYMENT, KUBE_DNS = "10.104.1.2", "10.104.2.2"
PROCESSOR = "payments/payment-processor"
TO_DNS = f"{PROCESSOR}:40000 (ID:300) -> kube-system/kube-dns:53 (ID:400)"
STRIPE, EVIL = "203.0.113.10", "203.0.113.66"
ORIGIN = RuleOrigin("CiliumNetworkPolicy", "payments", "payment-egress", "egress", 1,
                    "policies/payment-egress.yaml", 26)
COOKIE = 0x77
T0 = 1_700_000_000.0


def context() -> EnrichContext:
    cat = Catalog(
        identities=FrozenMap({
            300: IdentityInfo(300, ("k8s:app=payment-processor",), ("payments/payment-processor",)),
            400: IdentityInfo(400, ("k8s:k8s-app=kube-dns",), ("kube-system/kube-dns",)),
        }),
        cookies=FrozenMap({COOKIE: ORIGIN}),
    )
    return EnrichContext("node-1", cat, {PAYMENT: PROCESSOR, KUBE_DNS: "kube-system/kube-dns"})


def query_line(at: float, name: str, verdict: str, answers: tuple[str, ...] = (), rcode: str = "NOERROR",
               proto: str = "udp") -> str:
    """One line of the proxy's queries.log (meshctl.proxy.dns Proxy.judge/answered)."""
    record = {"time": at, "client": f"{PAYMENT}:40000", "server": f"{KUBE_DNS}:53", "protocol": proto,
              "query": name, "qtype": "A", "cookie": COOKIE, "verdict": verdict, "rcode": rcode}
    if verdict == "FORWARDED":
        record.update(answers=list(answers), ttl=1, learned={}, latency_us=800)
    return json.dumps(record)


LINES = [
    query_line(T0, "api.stripe.com", "FORWARDED", (STRIPE,)),
    query_line(T0 + 1, "evil.example.net", "FORWARDED", (EVIL,)),
    query_line(T0 + 2, "www.google.com", "DENIED", rcode="REFUSED", proto="tcp"),
    "{not json",
]


def connection(dst: str, verdict: int, reason: int, at_s: int) -> bytes:
    """The datapath's record of the payment processor's SYN to `dst`:443 (egress)."""
    return EVENT.pack(at_s * 10**9, socket.inet_aton(PAYMENT), socket.inet_aton(dst), socket.htons(41000),
                      socket.htons(443), 6, 1, verdict, reason, 300, 2, 7, 0, 0x02, 60)


def test_queries_become_records_and_answered_addresses_name_the_flows_that_follow(tmp_path: Path) -> None:
    store = FlowStore(tmp_path / "node-1.db", "node-1")
    dns = DnsRecords(context(), store.dims)
    enricher = Enricher(context(), store.dims, offset_ns=int(T0 * 1e9), names=dns.names)
    enricher.rows(connection(STRIPE, 1, 0, 0))  # named before the answer: cached without a name
    rows = dns.rows(LINES)
    assert len(rows) == 6 and all(len(r) == len(DNS_FIELDS) for r in rows)
    assert dns.names == {STRIPE: ("api.stripe.com",), EVIL: ("evil.example.net",)}
    assert dns.renamed == {STRIPE, EVIL}
    enricher.forget(dns.renamed)
    counters = FlowCounters()
    counters.add_dns(rows)
    store.insert(enricher.rows(connection(STRIPE, 1, 0, 5) + connection(EVIL, VERDICT_DROPPED,
                                                                          REASON_DEFAULT_DENY, 6)), [], rows)
    flows = query_all([store])
    text = [compact(f).split(" ", 3)[3] for f in flows]
    assert text == [
        f"{TO_DNS} dns-request FORWARDED "
        f"(DNS Query api.stripe.com A) by {ORIGIN} (policies/payment-egress.yaml:26)",
        f"{TO_DNS} dns-response FORWARDED "
        '(DNS Answer "203.0.113.10" TTL: 1 (api.stripe.com A))',
        f"{TO_DNS} dns-request FORWARDED "
        f"(DNS Query evil.example.net A) by {ORIGIN} (policies/payment-egress.yaml:26)",
        f"{TO_DNS} dns-response FORWARDED "
        '(DNS Answer "203.0.113.66" TTL: 1 (evil.example.net A))',
        f"{TO_DNS} dns-request DROPPED "
        f"(DNS Query www.google.com A): no DNS rule of {ORIGIN} (policies/payment-egress.yaml:26) matches",
        f"{TO_DNS} dns-response DROPPED "
        "(DNS Answer RCode: REFUSED (www.google.com A))",
        "payments/payment-processor:41000 (ID:300) -> api.stripe.com:443 (ID:2) FORWARDED (TCP Flags: SYN)",
        "payments/payment-processor:41000 (ID:300) -> evil.example.net:443 (ID:2) DROPPED (default deny: "
        "payments/payment-processor egress isolated)",
    ]
    refused = flows[5].to_dict()
    assert refused["l7"]["dns"] == {"query": "www.google.com", "qtypes": ["A"], "rcode": "REFUSED", "ips": [],
                                    "ttl": 0}
    assert refused["protocol"] == "TCP" and flows[7].to_dict()["dst_names"] == ["evil.example.net"]
    assert "evil.example.net:443" in table(flows[7:])

    def shown(**kw: object) -> list[str]:
        return [f.l7_type or f"{f.dst_ip}" for f in query_all([store], FlowFilter(**kw))]  # type: ignore[arg-type]

    assert shown(protocols=("dns",)) == [f.l7_type for f in flows[:6]]
    assert shown(protocols=("dns",), verdicts=("DROPPED",)) == ["dns-request", "dns-response"]
    assert shown(to_fqdns=("api.stripe.com",)) == ["dns-request", "dns-response", STRIPE]
    assert shown(fqdns=("*.example.net",), protocols=("tcp",)) == [EVIL]  # the name on the drop
    assert shown(from_fqdns=("*.example.net",)) == []
    assert shown(excluded=FlowFilter(protocols=("dns",))) == [STRIPE, EVIL]
    assert shown(protocols=("udp",)) == [f.l7_type for f in flows[:4]]  # DNS over UDP is UDP
    for bad in ("api.**.com", "a b"):
        try:
            FlowFilter(to_fqdns=(bad,))
        except FilterError as err:
            assert str(err).startswith("--to-fqdn: ")
        else:
            raise AssertionError(f"--to-fqdn {bad!r} was taken")

    metrics = generate_latest(registry_for(counters)).decode()
    assert 'meshctl_dns_queries_total{ips_returned="",qtypes="A",rcode=""} 3.0' in metrics
    assert 'meshctl_dns_responses_total{ips_returned="1",qtypes="A",rcode="NOERROR"} 2.0' in metrics
    assert 'meshctl_dns_responses_total{ips_returned="0",qtypes="A",rcode="REFUSED"} 1.0' in metrics

    again = DnsRecords(context(), store.dims, last_ns=store.max_time("dns"))  # a restarted agent
    assert again.rows(LINES) == [] and again.names == dns.names  # nothing stored twice, names kept
    store.close()

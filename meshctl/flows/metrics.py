"""The agent's Prometheus metrics, in Hubble's shapes, counted in plain dicts on the hot path.

A prometheus-client Counter.labels().inc() per event costs microseconds; the agent instead adds
to dict counters per batch and a custom collector turns them into metric families when scraped.

Shapes follow Hubble (pkg/hubble/metrics: drop, flow, policy) and Cilium's agent metrics, so
dashboards and alerts carry over: drop reasons are identifiers (`POLICY_DENIED`, `NO_ENDPOINT`)
with `protocol` and `direction` labels; policy verdicts carry `direction`, `match` (which kind
of policy entry decided: `l3-only`, `l3-l4`, `all`, ... or `none` for a default deny) and
`action`; BPF map fill is `meshctl_bpf_map_pressure{map_name}` as Cilium's. No series has a
`node` label: one agent serves one node, and the scrape target says which.

Lost events: every drop the datapath counts in its `metrics` map also emits one ringbuf record
(unless the ring is full: flow_emit gives up, the counter still counts). So
    lost = (datapath drop packets since the agent started) - (drop records received),
with the counter read just before the ring is drained, confirmed by two readings in a row,
never decreasing: a counter. New-connection FORWARDED events cannot be checked this way (the
datapath counters also count established packets, which emit nothing).
"""

from __future__ import annotations

import bisect
import platform
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from meshctl.flows.dnslog import DNS_FIELDS, DnsRow
from meshctl.flows.enrich import (
    R_ATTRIBUTION,
    R_DIRECTION,
    R_PROTOCOL,
    R_REASON,
    R_VERDICT,
    STORED_FIELDS,
    Row,
)
from meshctl.flows.flow import DIRECTIONS, L7_DNS_REQUEST, L7_REQUEST, L7_RESPONSE, VERDICTS
from meshctl.flows.httplog import HTTP_FIELDS, HttpRow
from meshctl.nodestate import PROTO_ANY, PolicyKey, ReservedIdentity

if TYPE_CHECKING:
    from meshctl.state.operations import OperationTotals

R_COOKIE = STORED_FIELDS.index("cookie")
VERDICT_FORWARDED, VERDICT_DROPPED = 1, 2
# enum flow_reason (bpf/lib/common.h) -> the reason identifier of a drop, as Hubble's
# flow.DropReason names it where one means the same thing.
DROP_REASONS = {
    2: "POLICY_DENIED",  # default deny: no allow entry matched (Cilium's DROP_POLICY)
    3: "POLICY_DENY",  # an explicit deny entry matched (Cilium's DROP_POLICY_DENY)
    4: "UNSUPPORTED_L3_PROTOCOL",  # IPv6, dropped by [datapath] ipv6 = "drop"
    5: "INVALID_PACKET_DROPPED",  # malformed headers
    6: "NO_ENDPOINT",  # a pod veth with no endpoint entry: the node fails closed
    8: "PROXY_LOOKUP_FAILED",  # an L7 port while the node's proxy does not listen (fail closed)
    9: "PROXY_REQUIRED",  # an L7 port reached outside the proxy
}
# Reasons decided by the endpoint's policy (the others are not policy verdicts).
REASON_ALLOWED, REASON_NOT_ENFORCED, REASON_DEFAULT_DENY, REASON_EXPLICIT_DENY = 0, 1, 2, 3
POLICY_REASONS = (REASON_ALLOWED, REASON_NOT_ENFORCED, REASON_DEFAULT_DENY, REASON_EXPLICIT_DENY)
# Hubble's v1.FlowProtocol names.
PROTOCOL_LABELS = {1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}

# Hubble's http metrics: the reporter is the side whose proxy saw it (ingress: server).
REPORTERS = {0: "server", 1: "client"}
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # Prometheus's defaults
_H = {name: HTTP_FIELDS.index(name)
      for name in ("direction", "l7", "method", "version", "status", "latency_ns")}
_D = {name: DNS_FIELDS.index(name) for name in ("l7", "qtypes", "rcode", "ips")}
_KEY = itemgetter(R_VERDICT, R_REASON, R_DIRECTION, R_PROTOCOL, R_COOKIE)
_ATTR_KEY = itemgetter(R_ATTRIBUTION, R_VERDICT)
Verdict5 = tuple[int, int, int, int, int]  # verdict, reason, direction, protocol, cookie


def protocol_label(number: int) -> str:
    return PROTOCOL_LABELS.get(number, str(number))


def key_match(key: PolicyKey) -> str:
    """The policy match type of an entry (monitor's PolicyMatchType strings, lowercased as
    Hubble's policy metric does): what the entry names of the peer (L3) and of the port (L4)."""
    l3 = key.identity != ReservedIdentity.ANY
    if key.protocol == PROTO_ANY:
        return "l3-only" if l3 else "all"
    if key.port_prefix == 0:  # a protocol, every port
        return "l3-proto" if l3 else "proto-only"
    return "l3-l4" if l3 else "l4-only"


def cookie_matches(policies: Mapping[int, Mapping[PolicyKey, Any]]) -> dict[int, str]:
    """cookie -> match type over every endpoint's entries (a cookie is one rule, and one rule's
    entries share its shape; where they do not, the most specific entry's shape is kept)."""
    out: dict[int, tuple[int, str]] = {}
    for entries in policies.values():
        for key, entry in entries.items():
            cookie = int(getattr(entry, "cookie", 0))
            if not cookie:
                continue
            rank = key.lpm_prefixlen + (32 if key.identity != ReservedIdentity.ANY else 0)
            if cookie not in out or rank > out[cookie][0]:
                out[cookie] = (rank, key_match(key))
    return {c: m for c, (_, m) in out.items()}


class FlowCounters:
    """Counts by label tuple; `add(rows)` is the only hot-path call (C-level passes per batch)."""

    def __init__(self) -> None:
        self.verdicts: Counter[Verdict5] = Counter()
        self.by_attribution: Counter[tuple[int, int]] = Counter()  # attribution id, verdict
        self.attr_names: Mapping[int, tuple[str, str]] = {}  # the store's dims.attr_names
        self.matches: dict[int, str] = {}  # cookie -> match type (grows: old cookies keep theirs)
        self.received = 0
        self.received_drops = 0
        self.lost = 0
        self._last_candidate = 0
        self.stored = 0
        self.catalog_reloads = 0
        self.ring_peak_fill = 0.0  # highest ring buffer fill seen (0..1): near 1 means events at risk
        self.http_requests: Counter[tuple[str, str, str]] = Counter()  # method, protocol, reporter
        self.http_responses: Counter[tuple[str, str, str]] = Counter()  # method, status, reporter
        # (method, reporter) -> [count per HTTP_BUCKETS bound (not cumulative), +Inf count, sum s]
        self.http_durations: dict[tuple[str, str], list[float]] = {}
        # Hubble's dns metrics: (rcode, qtypes, ips_returned); a query has no rcode nor IPs yet
        self.dns_queries: Counter[tuple[str, str, str]] = Counter()
        self.dns_responses: Counter[tuple[str, str, str]] = Counter()

    def add(self, rows: Sequence[Row]) -> None:
        self.received += len(rows)
        self.verdicts.update(map(_KEY, rows))  # type: ignore[arg-type]
        self.received_drops += sum(1 for r in rows if r[R_VERDICT] == VERDICT_DROPPED)
        self.by_attribution.update(map(_ATTR_KEY, rows))  # type: ignore[arg-type]

    def add_http(self, rows: Sequence[HttpRow]) -> None:
        """The proxy's records (meshctl.flows.httplog): Hubble's http requests/responses/duration."""
        for r in rows:
            method, reporter = str(r[_H["method"]]), REPORTERS.get(int(r[_H["direction"]]), "server")  # type: ignore[call-overload]
            if r[_H["l7"]] == L7_REQUEST:
                self.http_requests[(method, str(r[_H["version"]]), reporter)] += 1
            elif r[_H["l7"]] == L7_RESPONSE:
                self.http_responses[(method, str(r[_H["status"]]), reporter)] += 1
                seconds = int(r[_H["latency_ns"]]) / 1e9  # type: ignore[call-overload]
                hist = self.http_durations.setdefault((method, reporter), [0.0] * (len(HTTP_BUCKETS) + 2))
                slot = bisect.bisect_left(HTTP_BUCKETS, seconds)  # the first bound >= seconds
                hist[slot] += 1
                hist[-1] += seconds

    def add_dns(self, rows: Sequence[DnsRow]) -> None:
        """The DNS proxy's records (meshctl.flows.dnslog)."""
        for r in rows:
            qtypes = str(r[_D["qtypes"]])
            if r[_D["l7"]] == L7_DNS_REQUEST:
                self.dns_queries[("", qtypes, "")] += 1
            else:
                ips = str(r[_D["ips"]])
                self.dns_responses[(str(r[_D["rcode"]]), qtypes, str(ips.count(",") + 1 if ips else 0))] += 1

    @property
    def flows(self) -> Counter[tuple[int, int, int]]:
        """(verdict, direction, protocol) -> count."""
        out: Counter[tuple[int, int, int]] = Counter()
        for (v, _r, d, p, _c), n in self.verdicts.items():
            out[(v, d, p)] += n
        return out

    @property
    def drops(self) -> Counter[int]:
        """reason -> dropped flows."""
        out: Counter[int] = Counter()
        for (v, r, _d, _p, _c), n in self.verdicts.items():
            if v == VERDICT_DROPPED:
                out[r] += n
        return out

    @property
    def drops_by_label(self) -> Counter[tuple[str, str, str]]:
        """(reason identifier, protocol, direction) -> dropped flows."""
        out: Counter[tuple[str, str, str]] = Counter()
        for (v, r, d, p, _c), n in self.verdicts.items():
            if v == VERDICT_DROPPED:
                out[(DROP_REASONS.get(r, str(r)), protocol_label(p), DIRECTIONS.get(d, str(d)))] += n
        return out

    @property
    def policy_verdicts(self) -> Counter[tuple[str, str, str]]:
        """(direction, match, action) -> count, as hubble_policy_verdicts_total. A rule's entry
        decided (`allowed`, `explicit deny`): its match type; no policy selects the endpoint in
        that direction: `all` (the allow-all of default enforcement); a default deny: `none`."""
        out: Counter[tuple[str, str, str]] = Counter()
        for (v, r, d, _p, cookie), n in self.verdicts.items():
            if r not in POLICY_REASONS:
                continue
            if r == REASON_NOT_ENFORCED:
                match = "all"
            elif r == REASON_DEFAULT_DENY:
                match = "none"
            else:
                match = self.matches.get(cookie, "unknown")
            out[(DIRECTIONS.get(d, str(d)), match, VERDICTS.get(v, str(v)).lower())] += n
        return out

    @property
    def policy(self) -> Counter[tuple[str, int]]:
        """(policy rule or `default deny: <isolating policies>`, verdict) -> count (for reports;
        not exported: rule names are free text)."""
        out: Counter[tuple[str, int]] = Counter()
        for (aid, verdict), n in self.by_attribution.items():
            policy, isolated = self.attr_names.get(aid, ("", ""))
            if policy:
                out[(policy, verdict)] += n
            elif isolated:
                out[("default deny: " + isolated, verdict)] += n
        return out

    def update_lost(self, datapath_drops_since_start: int) -> None:
        """Counter read BEFORE the ring was drained: a drop counted but still being written to
        the ring can show up once; a lost one shows up every time, so take the smaller of two
        consecutive readings."""
        candidate = max(0, datapath_drops_since_start - self.received_drops)
        self.lost = max(self.lost, min(candidate, self._last_candidate))
        self._last_candidate = candidate


@dataclass(frozen=True)
class MapFill:
    name: str
    entries: int
    capacity: int


@dataclass
class NodeSources:
    """What the collector reads besides the counters, each read when scraped (None: not
    exported). `refresh_matches` updates the counters' cookie -> match table before the
    policy verdicts are made."""

    maps: Callable[[], Iterable[MapFill]] | None = None
    operations: Callable[[], Mapping[str, OperationTotals]] | None = None
    refresh_matches: Callable[[], None] | None = None
    version: str = ""
    datapath_build: str = ""


class _Collector(Collector):
    def __init__(self, counters: FlowCounters, sources: NodeSources) -> None:
        self.c, self.s = counters, sources

    def collect(self) -> Iterator[Any]:
        yield from self._flows()
        yield from self._http()
        yield from self._events()
        yield from self._maps()
        yield from self._operations()
        info = GaugeMetricFamily("meshctl_build_info", "meshctl and datapath build of this agent",
                                 labels=["version", "datapath_build", "python_version"])
        info.add_metric([self.s.version, self.s.datapath_build, platform.python_version()], 1)
        yield info

    def _flows(self) -> Iterator[Any]:
        c = self.c
        flows = CounterMetricFamily("meshctl_flows_processed",
                                    "Flow events by verdict, direction and protocol",
                                    labels=["type", "verdict", "direction", "protocol"])
        for (v, d, p), n in sorted(c.flows.items()):
            flows.add_metric(["PolicyVerdict", VERDICTS.get(v, str(v)), DIRECTIONS.get(d, str(d)),
                              protocol_label(p)], n)
        yield flows
        drops = CounterMetricFamily("meshctl_drop", "Dropped flows by reason, protocol and direction",
                                    labels=["reason", "protocol", "direction"])
        for (reason, proto, direction), n in sorted(c.drops_by_label.items()):
            drops.add_metric([reason, proto, direction], n)
        yield drops
        if self.s.refresh_matches is not None:
            self.s.refresh_matches()
        pol = CounterMetricFamily("meshctl_policy_verdicts",
                                  "Policy verdicts by direction, match type and action",
                                  labels=["direction", "match", "action"])
        for (direction, match, action), n in sorted(c.policy_verdicts.items()):
            pol.add_metric([direction, match, action], n)
        yield pol

    def _http(self) -> Iterator[Any]:
        c = self.c
        requests = CounterMetricFamily("meshctl_http_requests", "HTTP requests seen by the L7 proxy",
                                       labels=["method", "protocol", "reporter"])
        for labels, n in sorted(c.http_requests.items()):
            requests.add_metric(list(labels), n)
        yield requests
        responses = CounterMetricFamily("meshctl_http_responses", "HTTP responses seen by the L7 proxy",
                                        labels=["method", "status", "reporter"])
        for labels, n in sorted(c.http_responses.items()):
            responses.add_metric(list(labels), n)
        yield responses
        duration = HistogramMetricFamily("meshctl_http_request_duration_seconds",
                                         "Time from a request to its response's first byte",
                                         labels=["method", "reporter"])
        for labels, hist in sorted(c.http_durations.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip(HTTP_BUCKETS, hist, strict=False):
                cumulative += n
                buckets.append((_bound(bound), cumulative))
            buckets.append(("+Inf", cumulative + hist[len(HTTP_BUCKETS)]))
            duration.add_metric(list(labels), buckets, sum_value=hist[-1])
        yield duration
        for name, what, counts in (
                ("meshctl_dns_queries", "DNS queries seen by the DNS proxy", c.dns_queries),
                ("meshctl_dns_responses", "DNS answers the DNS proxy sent", c.dns_responses)):
            family = CounterMetricFamily(name, what, labels=["rcode", "qtypes", "ips_returned"])
            for labels, n in sorted(counts.items()):
                family.add_metric(list(labels), n)
            yield family

    def _events(self) -> Iterator[Any]:
        c = self.c
        for name, doc, value in (
            ("meshctl_flow_events_received", "Ringbuf records received", c.received),
            ("meshctl_flow_events_stored", "Flows written to the store", c.stored),
            ("meshctl_flow_events_lost", "Drop events the datapath counted but the agent never received",
             c.lost),
            ("meshctl_flow_catalog_reloads", "Reloads of the names of identities and rules",
             c.catalog_reloads),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("meshctl_flow_ring_peak_fill_ratio",
                                "Highest fill of the events ring buffer seen (1 = full: events lost)",
                                value=c.ring_peak_fill)

    def _maps(self) -> Iterator[Any]:
        if self.s.maps is None:
            return
        fills = list(self.s.maps())
        pressure = GaugeMetricFamily("meshctl_bpf_map_pressure",
                                     "Fill of each BPF map (entries / max entries)", labels=["map_name"])
        entries = GaugeMetricFamily("meshctl_bpf_map_entries", "Entries in each BPF map", labels=["map_name"])
        capacity = GaugeMetricFamily("meshctl_bpf_map_capacity", "Max entries of each BPF map",
                                     labels=["map_name"])
        for f in fills:
            pressure.add_metric([f.name], f.entries / f.capacity if f.capacity else 0.0)
            entries.add_metric([f.name], f.entries)
            capacity.add_metric([f.name], f.capacity)
        yield from (pressure, entries, capacity)

    def _operations(self) -> Iterator[Any]:
        if self.s.operations is None:
            return
        from meshctl.state.operations import BUCKETS

        ops = self.s.operations()
        for op in ("apply", "drift"):
            t = ops.get(op)
            total = CounterMetricFamily(f"meshctl_{op}", f"{op.capitalize()} runs by result",
                                        labels=["result"])
            for result, n in sorted((t.results if t else {}).items()):
                total.add_metric([result], n)
            yield total
            cumulative, buckets = 0, []
            for bound, n in zip(BUCKETS, t.buckets if t else [0] * len(BUCKETS), strict=True):
                cumulative += n
                buckets.append((_bound(bound), cumulative))
            buckets.append(("+Inf", t.count if t else 0))
            yield HistogramMetricFamily(f"meshctl_{op}_duration_seconds", f"Duration of {op} runs",
                                        buckets=buckets, sum_value=t.seconds if t else 0.0)


def _bound(value: float) -> str:
    return str(int(value)) + ".0" if value == int(value) else str(value)


def registry_for(counters: FlowCounters, sources: NodeSources | None = None) -> CollectorRegistry:
    """The agent's registry: flow metrics plus the process and platform collectors."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(counters, sources or NodeSources()))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    return reg


Health = Callable[[], tuple[bool, str]]  # (ok, why) for a probe


def serve(registry: CollectorRegistry, address: str, port: int, live: Health | None = None,
          ready: Health | None = None) -> Any:
    """Start the HTTP server in a daemon thread: /metrics, and the kubelet's probes /healthz
    (`live`) and /readyz (`ready`): 200 when they answer ok, else 503 with the reason."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # a scrape is not news
            pass

    metrics = make_wsgi_app(registry)
    probes = {"/healthz": live, "/readyz": ready}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        ok, why = probe()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [(why or "ok").encode() + b"\n"]

    server = make_server(address, port, app, ThreadingWSGIServer, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def datapath_drops(items: Iterable[tuple[Any, Any]]) -> int:
    """Sum of DROPPED packets over a decoded `metrics` map (MetricKey, MetricTotal) list."""
    return sum(int(t.packets) for k, t in items if int(k.verdict) == VERDICT_DROPPED)

"""The agent's Prometheus metrics: counted in plain dicts on the hot path, exported at scrape time.

A prometheus-client Counter.labels().inc() per event costs microseconds; the agent instead adds
to dict counters per batch and a custom collector turns them into metric families when scraped.

Lost events: every drop the datapath counts in its `metrics` map also emits one ringbuf record
(unless the ring is full: flow_emit gives up, the counter still counts). So
    lost = (datapath drop packets since the agent started) - (drop records received),
with the counter read just before the ring is drained, confirmed by two readings in a row,
never decreasing. New-connection FORWARDED events
cannot be checked this way (the counters also count established packets, which emit nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from meshctl.flows.enrich import R_ATTRIBUTION, R_DIRECTION, R_PROTOCOL, R_REASON, R_VERDICT, Row
from meshctl.flows.flow import DIRECTIONS, REASONS, VERDICTS, protocol_name

_FLOW_KEY = itemgetter(R_VERDICT, R_DIRECTION, R_PROTOCOL)
_ATTR_KEY = itemgetter(R_ATTRIBUTION, R_VERDICT)


class FlowCounters:
    """Counts by label tuple; `add(rows)` is the only hot-path call (C-level passes per batch)."""

    def __init__(self) -> None:
        self.flows: Counter[tuple[int, int, int]] = Counter()  # verdict, direction, protocol
        self.drops: Counter[int] = Counter()  # reason
        self.by_attribution: Counter[tuple[int, int]] = Counter()  # attribution id, verdict
        self.attr_names: Mapping[int, tuple[str, str]] = {}  # the store's dims.attr_names
        self.received = 0
        self.received_drops = 0
        self.lost = 0
        self._last_candidate = 0
        self.stored = 0
        self.catalog_reloads = 0
        self.ring_peak_fill = 0.0  # highest ring buffer fill seen (0..1): near 1 means events at risk

    def add(self, rows: Sequence[Row]) -> None:
        self.received += len(rows)
        self.flows.update(map(_FLOW_KEY, rows))  # type: ignore[arg-type]
        drops = [r[R_REASON] for r in rows if r[R_VERDICT] == 2]
        self.received_drops += len(drops)
        self.drops.update(drops)  # type: ignore[arg-type]
        self.by_attribution.update(map(_ATTR_KEY, rows))  # type: ignore[arg-type]

    @property
    def policy(self) -> Counter[tuple[str, int]]:
        """(policy rule or `default deny: <isolating policies>`, verdict) -> count."""
        out: Counter[tuple[str, int]] = Counter()
        for (aid, verdict), n in self.by_attribution.items():
            policy, isolated = self.attr_names.get(aid, ("", ""))
            if policy:
                out[(policy, verdict)] += n
            elif isolated:
                out[("default deny: " + isolated, 2)] += n
        return out

    def update_lost(self, datapath_drops_since_start: int) -> None:
        """Counter read BEFORE the ring was drained: a drop counted but still being written to
        the ring can show up once; a lost one shows up every time, so take the smaller of two
        consecutive readings."""
        candidate = max(0, datapath_drops_since_start - self.received_drops)
        self.lost = max(self.lost, min(candidate, self._last_candidate))
        self._last_candidate = candidate


class _Collector(Collector):
    def __init__(self, node: str, counters: FlowCounters) -> None:
        self.node, self.c = node, counters

    def collect(self) -> Iterator[Any]:
        c, node = self.c, self.node
        flows = CounterMetricFamily("meshctl_flows", "Flow events by verdict, direction and protocol",
                                    labels=["node", "verdict", "direction", "protocol"])
        for (v, d, p), n in sorted(c.flows.items()):
            flows.add_metric([node, VERDICTS.get(v, str(v)), DIRECTIONS.get(d, str(d)), protocol_name(p)], n)
        yield flows
        drops = CounterMetricFamily("meshctl_drops", "Dropped flows by reason", labels=["node", "reason"])
        for reason, n in sorted(c.drops.items()):
            drops.add_metric([node, REASONS.get(reason, str(reason))], n)
        yield drops
        pol = CounterMetricFamily("meshctl_policy_verdicts", "Verdicts by the policy rule that decided",
                                  labels=["node", "policy", "verdict"])
        for (policy, v), n in sorted(c.policy.items()):
            pol.add_metric([node, policy, VERDICTS.get(v, str(v))], n)
        yield pol
        for name, doc, value in (
            ("meshctl_flow_events_received", "Ringbuf records received", c.received),
            ("meshctl_flow_events_stored", "Flows written to the store", c.stored),
        ):
            m = CounterMetricFamily(name, doc, labels=["node"])
            m.add_metric([node], value)
            yield m
        lost = GaugeMetricFamily("meshctl_flow_events_lost",
                                 "Drop events the datapath counted but the agent never received",
                                 labels=["node"])
        lost.add_metric([node], c.lost)
        yield lost
        fill = GaugeMetricFamily("meshctl_flow_ring_peak_fill_ratio",
                                 "Highest fill of the events ring buffer seen (1 = full: events lost)",
                                 labels=["node"])
        fill.add_metric([node], c.ring_peak_fill)
        yield fill


def registry_for(node: str, counters: FlowCounters) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(node, counters))
    return reg


def serve(registry: CollectorRegistry, address: str, port: int) -> Any:
    """Start the /metrics HTTP server in a daemon thread; returns the server."""
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server


def datapath_drops(items: Iterable[tuple[Any, Any]]) -> int:
    """Sum of DROPPED packets over a decoded `metrics` map (MetricKey, MetricTotal) list."""
    return sum(int(t.packets) for k, t in items if int(k.verdict) == 2)

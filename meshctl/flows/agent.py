"""The per-node flow agent: ringbuf -> enrich -> SQLite store, plus Prometheus metrics; and the
node's L7 proxy's access log -> HTTP records in the same store (meshctl.flows.httplog), its DNS
proxy's query log -> DNS records, and the names answered addresses had on their flows
(meshctl.flows.dnslog).

Runs in its own process (never inside a latency-sensitive one: GIL contention). The ring buffer
is read through mmap (meshctl.flows.ring: no per-record callback); decoding, naming and the
SQL insert happen per batch, one transaction per poll, which is what lets one Python process
store well over 100k events/s.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshctl.dataplane.dnsproxy import DnsFiles
from meshctl.dataplane.envoy import ProxyFiles
from meshctl.dataplane.libbpf import Map
from meshctl.flows.dnslog import DnsRecords, DnsRow
from meshctl.flows.enrich import EnrichContext, Enricher, Row
from meshctl.flows.filters import DNS, HTTP
from meshctl.flows.httplog import AccessLogTail, HttpRecords, HttpRow
from meshctl.flows.mapstats import MapPressure, PolicyMatches
from meshctl.flows.metrics import FlowCounters, NodeSources, datapath_drops, registry_for, serve
from meshctl.flows.ring import MmapRing
from meshctl.flows.store import FlowStore
from meshctl.flows.writer import StoreWriter

log = logging.getLogger(__name__)
LIVENESS_S = 30.0


@dataclass
class AgentSettings:
    cluster: str
    node: str
    store: Path
    max_age_s: float | None = 24 * 3600.0
    max_rows: int | None = 1_000_000
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 0  # 0 = no HTTP endpoint
    poll_ms: int = 100
    reload_every_s: float = 3.0
    prune_every_s: float = 30.0
    lost_every_s: float = 1.0
    http_every_s: float = 0.25  # how often the proxy's access log is read
    state_dir: Path | None = None  # apply/drift counts for /metrics (meshctl.state.operations)


class Agent:
    """One node's agent; `run()` until `stop` is set (SIGTERM/SIGINT set it in `main`)."""

    def __init__(self, settings: AgentSettings, context: Callable[[EnrichContext | None], EnrichContext],
                 changed: Callable[[], object] | None = None) -> None:
        from meshctl.dataplane.node import node_pin_dir

        self.s = settings
        self._context, self._changed = context, changed
        self.counters = FlowCounters()
        self.stop = threading.Event()
        self.beat = time.monotonic()  # the flow loop's last turn (liveness)
        self.storing = False  # pins found, store open (readiness)
        pins = node_pin_dir(settings.cluster, settings.node)
        self._pins = pins
        self._events_pin, self._metrics_pin = pins / "events", pins / "metrics"
        self.metrics_server: object | None = None

    def _datapath_drops(self) -> int:
        from meshctl.dataplane.maps import MetricsMap

        if not self._metrics_pin.exists():
            return 0
        with MetricsMap(Map.from_pin(self._metrics_pin)) as m:
            return datapath_drops(m.items())

    def _open_ring(self) -> tuple[MmapRing, int]:
        """The node's ring buffer, and the inode of its pin (a reloaded datapath pins a new one)."""
        ino = self._events_pin.stat().st_ino
        return MmapRing(Map.from_pin(self._events_pin)), ino

    def _ring_replaced(self, ino: int) -> bool:
        try:
            return self._events_pin.stat().st_ino != ino
        except FileNotFoundError:  # uninstalled: keep the old ring until a datapath is loaded again
            return False

    def _wait_for_pins(self) -> bool:
        while not self._events_pin.exists():
            self.beat = time.monotonic()
            if self.stop.wait(0.5):
                return False
        return True

    def live(self) -> tuple[bool, str]:
        """/healthz: the flow loop turns (it polls the ring at least every poll interval)."""
        stalled = time.monotonic() - self.beat
        return (True, "ok") if stalled < LIVENESS_S else (False, f"flow loop stalled for {stalled:.0f} s")

    def ready(self) -> tuple[bool, str]:
        """/readyz: the node's datapath is loaded and its flows are being stored."""
        return (True, "ok") if self.storing else (False, "waiting for the node's datapath pins")

    def run(self) -> None:
        s = self.s
        if s.metrics_port:
            registry = registry_for(self.counters, self._sources())
            try:
                self.metrics_server = serve(registry, s.metrics_address, s.metrics_port,
                                            live=self.live, ready=self.ready)
                log.info("agent %s: metrics on http://%s:%d/metrics", s.node, s.metrics_address,
                         s.metrics_port)
            except OSError as err:  # flows matter more than metrics: keep going
                log.warning("agent %s: no metrics endpoint on %s:%d (%s)", s.node, s.metrics_address,
                            s.metrics_port, err.strerror)
        if not self._wait_for_pins():
            return
        ctx = self._context(None)
        token = self._changed() if self._changed else None
        store = FlowStore(s.store, s.node)
        store.set_meta("node", s.node)
        self.counters.attr_names = store.dims.attr_names
        ring, ring_ino = self._open_ring()
        writer = StoreWriter(store, self._stored, s.max_age_s, s.max_rows, s.prune_every_s)
        proxy = ProxyFiles.of(s.cluster, s.node)
        access_log = AccessLogTail(proxy.access_log)
        http = HttpRecords(ctx, store.dims, last_ns=store.max_time(HTTP))
        query_log = AccessLogTail(DnsFiles.of(s.cluster, s.node).log)
        dns = DnsRecords(ctx, store.dims, last_ns=store.max_time(DNS))
        enricher = Enricher(ctx, store.dims, floor_ns=store.last_ns, names=dns.names)
        drops_base = self._datapath_drops()
        counted = 0
        now = time.monotonic()
        next_reload, next_lost, next_http = now + s.reload_every_s, now + s.lost_every_s, now
        log.info("agent %s: storing flows in %s", s.node, s.store)
        self.storing = True
        try:
            while not self.stop.is_set():
                raw = ring.poll(s.poll_ms)
                now = self.beat = time.monotonic()
                # DNS answers before the flows: a pod connects only after its answer, which the
                # proxy logged before sending it, so the flow finds the name
                self._accept_dns(writer, dns.rows(query_log.lines()))
                if dns.renamed:
                    enricher.forget(dns.renamed)
                    dns.renamed.clear()
                if raw:
                    floor = enricher.last_ns
                    enricher.missed = False
                    rows = enricher.rows(raw, framed=True)
                    if enricher.missed and self._changed and now >= next_reload - s.reload_every_s + 0.5:
                        next_reload = now  # unknown names: look for a new catalog before storing
                        enricher.last_ns = floor  # these rows are made again below
                    else:
                        self._accept(writer, rows)
                        raw = b""
                if now >= next_lost:
                    counted = self._datapath_drops() - drops_base
                    rest = ring.consume()  # what is still in the ring is not lost
                    if raw:
                        raw += rest  # after the held-back records: time order
                    else:
                        self._accept(writer, enricher.rows(rest, framed=True))
                    self.counters.update_lost(counted)
                    self.counters.ring_peak_fill = ring.max_backlog / ring.size
                    if self._ring_replaced(ring_ino):  # uninstalled and loaded again: a new ring
                        ring.close()
                        ring, ring_ino = self._open_ring()
                        drops_base = self._datapath_drops() - counted  # the count goes on
                        log.info("agent %s: the datapath was loaded again: reading its new ring buffer",
                                 s.node)
                    next_lost = now + s.lost_every_s
                if now >= next_http:
                    http.refresh_rules(proxy)
                    self._accept_http(writer, http.rows(access_log.lines()))
                    next_http = now + s.http_every_s
                if self._changed and now >= next_reload:
                    new = self._changed()
                    if new != token:
                        token = new
                        ctx = self._context(ctx)
                        enricher = Enricher(ctx, store.dims, enricher.offset_ns, enricher.last_ns,
                                            names=dns.names)
                        http.set_context(ctx)
                        dns.set_context(ctx)
                        self.counters.catalog_reloads += 1
                        log.info("agent %s: names reloaded", s.node)
                    next_reload = now + s.reload_every_s
                if raw:  # held back for a reload check: store it now, with the newest names
                    self._accept(writer, enricher.rows(raw, framed=True))
            self._accept(writer, enricher.rows(ring.consume(), framed=True))
            self._accept_http(writer, http.rows(access_log.lines()))
            self._accept_dns(writer, dns.rows(query_log.lines()))
        finally:
            try:
                writer.close()
            finally:
                log.info("agent %s: stopped; ring buffer peak fill %.1f%%", s.node,
                         100.0 * ring.max_backlog / ring.size)
                ring.close()
                store.close()
                if self.metrics_server is not None:
                    self.metrics_server.shutdown()  # type: ignore[attr-defined]

    def _sources(self) -> NodeSources:
        """What /metrics reads besides the counters: map pressure, policy match types, the
        apply/drift totals of the state dir, the builds."""
        from meshctl import __version__
        from meshctl.errors import MeshctlError
        from meshctl.state.operations import read

        try:
            from meshctl.dataplane.node import current_build

            build = current_build()[:12]
        except (MeshctlError, OSError):
            build = ""
        state_dir = self.s.state_dir
        return NodeSources(
            maps=MapPressure(self._pins).read,
            operations=(lambda: read(state_dir)) if state_dir is not None else None,
            refresh_matches=PolicyMatches(self._pins, self.counters).refresh,
            version=__version__, datapath_build=build,
        )

    def _accept(self, writer: StoreWriter, rows: list[Row]) -> None:
        if rows:
            self.counters.add(rows)
            writer.put(rows)

    def _accept_http(self, writer: StoreWriter, rows: list[HttpRow]) -> None:
        if rows:
            self.counters.add_http(rows)
            writer.put([], rows)

    def _accept_dns(self, writer: StoreWriter, rows: list[DnsRow]) -> None:
        if rows:
            self.counters.add_dns(rows)
            writer.put([], [], rows)

    def _stored(self, n: int) -> None:
        self.counters.stored += n

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())

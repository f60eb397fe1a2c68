"""Flows without the kernel: decode + enrich, filters -> SQL, the SQLite store, renderers."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from meshctl.catalog import Catalog, IdentityInfo, RuleOrigin
from meshctl.flows.dims import Dimensions
from meshctl.flows.enrich import EVENT, EVENT_SIZE, EnrichContext, Enricher, flow_of
from meshctl.flows.filters import FilterError, FlowFilter, parse_duration, parse_time
from meshctl.flows.flow import Flow
from meshctl.flows.metrics import FlowCounters
from meshctl.flows.render import as_json, compact, table
from meshctl.flows.store import FlowStore, query_all
from meshctl.nodestate import Direction, FrozenMap

DENY_ORIGIN = RuleOrigin("CiliumNetworkPolicy", "production", "no-cache", "ingressDeny", 0)
ALLOW_ORIGIN = RuleOrigin("CiliumNetworkPolicy", "production", "database-security", "ingress", 0)


def catalog() -> Catalog:
    return Catalog(
        identities=FrozenMap({
            300: IdentityInfo(300, ("k8s:app=cache", "k8s:io.kubernetes.pod.namespace=production"),
                              ("production/cache",)),
            400: IdentityInfo(400, ("k8s:app=postgres", "k8s:io.kubernetes.pod.namespace=production"),
                              ("production/postgres",)),
            500: IdentityInfo(500, ("k8s:app=backend", "k8s:io.kubernetes.pod.namespace=production"),
                              ("production/backend",)),
        }),
        endpoints=FrozenMap({"node-1": FrozenMap({7: "production/postgres"})}),
        cookies=FrozenMap({11: DENY_ORIGIN, 12: ALLOW_ORIGIN}),
        isolation=FrozenMap({"production/postgres": FrozenMap(
            {Direction.INGRESS: ("production/database-security",)})}),
        staged_isolation=FrozenMap({"production/postgres": FrozenMap(
            {Direction.INGRESS: ("production/database-security", "production/lockdown")})}),
    )


IPS = {"10.102.1.5": "production/postgres", "10.102.2.7": "production/cache",
       "10.102.3.9": "production/backend"}


def record(src: str, dst: str, sport: int, dport: int, verdict: int, reason: int, sid: int, did: int,
           cookie: int = 0, direction: int = 0, ts: int = 1_000, proto: int = 6, flags: int = 0x02) -> bytes:
    return EVENT.pack(ts, socket.inet_aton(src), socket.inet_aton(dst), socket.htons(sport),
                      socket.htons(dport), proto, direction, verdict, reason, sid, did, 7, cookie, flags, 60)


def enricher(dims: Dimensions | None = None) -> Enricher:
    return Enricher(EnrichContext("node-1", catalog(), IPS), dims, offset_ns=1_700_000_000 * 10**9)


def one_flow(e: Enricher, raw: bytes, node: str = "node-1") -> Flow:
    (row,) = e.wide(e.rows(raw))
    return flow_of(row, node)


def test_event_layout_matches_struct_flow_event() -> None:
    import ctypes

    from meshctl.dataplane.structs import FlowEvent

    assert EVENT_SIZE == ctypes.sizeof(FlowEvent) == 48


def test_default_deny_drop_names_the_isolating_policy() -> None:
    raw = record("10.102.2.7", "10.102.1.5", 40000, 5432, verdict=2, reason=2, sid=300, did=400)
    flow = one_flow(enricher(), raw)
    assert (flow.src_pod, flow.dst_pod, flow.src_port, flow.dst_port) == (
        "production/cache", "production/postgres", 40000, 5432)
    assert flow.time_ns == 1_700_000_000 * 10**9 + 1_000
    assert flow.drop_reason == (
        "default deny: production/postgres ingress isolated by production/database-security")
    assert "k8s:app=cache" in flow.src_labels
    line = compact(flow)
    assert "production/cache:40000 (ID:300) -> production/postgres:5432 (ID:400) DROPPED (default" in line


def test_explicit_deny_names_the_rule_and_forwarded_names_the_allow() -> None:
    e = enricher()
    deny = one_flow(e, record("10.102.2.7", "10.102.1.5", 1, 5432, 2, 3, 300, 400, cookie=11))
    assert deny.drop_reason == "denied by CiliumNetworkPolicy production/no-cache ingressDeny[0]"
    ok = one_flow(e, record("10.102.3.9", "10.102.1.5", 2, 5432, 1, 0, 500, 400, cookie=12, ts=5))
    assert ok.verdict_name == "FORWARDED" and ok.drop_reason == ""
    assert "FORWARDED (TCP Flags: SYN)" in compact(ok) and "database-security" in compact(ok)


def test_audit_flows_say_what_the_staged_policy_would_do() -> None:
    """AUDIT (verdict 4, Hubble's): a would-drop names the staged view's isolating policies or
    deny rule; a would-allow names the staged allow; both filter by --verdict AUDIT."""
    e = enricher()
    drop = one_flow(e, record("10.102.2.7", "10.102.1.5", 1, 5432, 4, 2, 300, 400))
    assert (drop.verdict_name, drop.audit_effect) == ("AUDIT", "would drop")
    assert drop.isolated_by == ("production/database-security", "production/lockdown")
    assert compact(drop).endswith("AUDIT (would drop: default deny: production/postgres ingress isolated by "
                                  "production/database-security, production/lockdown)")
    deny = one_flow(e, record("10.102.2.7", "10.102.1.5", 2, 5432, 4, 3, 300, 400, cookie=11, ts=3))
    assert deny.drop_reason == "denied by CiliumNetworkPolicy production/no-cache ingressDeny[0]"
    allow = one_flow(e, record("10.102.3.9", "10.102.1.5", 3, 5432, 4, 0, 500, 400, cookie=12, ts=5))
    assert (allow.audit_effect, allow.drop_reason) == ("would allow", "")
    rule = "CiliumNetworkPolicy production/database-security ingress[0]"
    assert f"AUDIT (would allow: by {rule})" in compact(allow)
    assert allow.to_dict()["audit"] == "would allow" and allow.to_dict()["verdict"] == "AUDIT"
    assert not e.missed


def test_store_filters_audit_flows(tmp_path: Path) -> None:
    s = FlowStore(tmp_path / "node-1.db", "node-1")
    e = enricher(s.dims)
    s.insert(e.rows(b"".join([
        record("10.102.2.7", "10.102.1.5", 40000, 5432, 4, 2, 300, 400, ts=1),
        record("10.102.2.7", "10.102.1.5", 40000, 5432, 1, 1, 300, 400, ts=2),
    ])))
    audits = [f for _, f in s.query(FlowFilter(verdicts=("audit",)))]
    assert [(f.verdict_name, f.audit_effect) for f in audits] == [("AUDIT", "would drop")]
    assert [f.verdict_name for _, f in s.query(FlowFilter(verdicts=("FORWARDED",)))] == ["FORWARDED"]


def test_unknown_addresses_and_identities_stay_numeric() -> None:
    flow = one_flow(enricher(), record("192.0.2.1", "10.102.1.5", 5, 80, 2, 2, 2, 400))
    assert flow.src_pod == "" and flow.src_ip == "192.0.2.1" and flow.src_labels == ()
    assert compact(flow).split(" ", 3)[3].startswith("192.0.2.1:5 (ID:2)")


@pytest.fixture
def store(tmp_path: Path) -> FlowStore:
    s = FlowStore(tmp_path / "node-1.db", "node-1")
    e = enricher(s.dims)
    raw = b"".join([
        record("10.102.2.7", "10.102.1.5", 40000, 5432, 2, 2, 300, 400, ts=1),
        record("10.102.3.9", "10.102.1.5", 40001, 5432, 1, 0, 500, 400, cookie=12, ts=2),
        record("10.102.3.9", "10.102.2.7", 40002, 6379, 1, 1, 500, 300, ts=3, direction=1),
        record("10.102.3.9", "10.102.2.7", 53, 53, 2, 2, 500, 300, ts=4, proto=17, flags=0),
    ])
    s.insert(e.rows(raw))
    return s


def pods(flows: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(f.src_pod, f.dst_pod) for f in flows]


def test_store_filters(store: FlowStore) -> None:
    q = lambda **kw: [f for _, f in store.query(FlowFilter(**kw))]  # noqa: E731
    assert len(q()) == 4
    assert pods(q(to_pods=("production/postgres",), verdicts=("DROPPED",))) == [
        ("production/cache", "production/postgres")]
    assert len(q(pods=("cache",))) == 3  # either end, name without namespace
    assert len(q(from_labels=("app=backend",))) == 3
    assert len(q(from_labels=("k8s:app=backend",), to_labels=("app=cache",))) == 2
    assert len(q(from_labels=("app=back",))) == 0  # whole label, not a prefix
    assert len(q(protocols=("udp",))) == 1
    assert len(q(to_ports=(5432,))) == 2
    assert len(q(ports=(53,))) == 1
    assert len(q(from_identities=(500,), verdicts=("FORWARDED",))) == 2
    assert len(q(verdicts=("FORWARDED", "DROPPED"))) == 4  # same flag: OR
    assert len(q(namespaces=("production",))) == 4 and len(q(namespaces=("demo",))) == 0


def test_store_last_since_until_and_follow_marks(store: FlowStore) -> None:
    base = 1_700_000_000 * 10**9
    last2 = store.query(last=2)
    assert [f.time_ns - base for _, f in last2] == [3, 4]  # newest N, oldest first
    window = store.query(FlowFilter(since_ns=base + 2, until_ns=base + 3))
    assert [f.time_ns - base for _, f in window] == [2, 3]
    rowid = last2[0][0]
    assert len(store.query(after_rowid=rowid)) == 1
    assert [f.time_ns - base for f in query_all([store], last=1)] == [4]


def test_store_survives_reopen_and_prunes_by_size_and_age(tmp_path: Path, store: FlowStore) -> None:
    store.close()
    again = FlowStore(tmp_path / "node-1.db", "node-1")
    assert again.count() == 4
    assert again.prune(None, 3) == 1 and again.count() == 3
    now = 1_700_000_000 + 10
    assert again.prune(5.0, None, now=now) == 3 and again.count() == 0


def test_readonly_store_missing_is_a_clear_error(tmp_path: Path) -> None:
    from meshctl.flows.store import StoreError

    with pytest.raises(StoreError, match="meshctl agent --node x"):
        FlowStore(tmp_path / "x.db", readonly=True)


def test_json_output_is_one_object_per_line(store: FlowStore) -> None:
    for _, f in store.query():
        line = as_json(f)
        assert "\n" not in line
        d = json.loads(line)
        assert d["verdict"] in ("FORWARDED", "DROPPED") and d["src_pod"]
    assert table([f for _, f in store.query()]).splitlines()[0].startswith("TIMESTAMP")


def test_filter_errors_are_clear() -> None:
    with pytest.raises(FilterError, match="--verdict"):
        FlowFilter(verdicts=("MAYBE",))
    with pytest.raises(FilterError, match="--protocol"):
        FlowFilter(protocols=("sctp",))
    with pytest.raises(FilterError, match="--since"):
        parse_time("yesterday", "--since")
    assert parse_duration("24h") == 86400 and parse_duration("1.5m") == 90
    assert parse_time("10s", "--since", now=100.0) == 90 * 10**9
    assert parse_time("2024-01-01T00:00:00Z", "--since") == 1704067200 * 10**9


def test_counters_and_lost_need_two_readings() -> None:
    c = FlowCounters()
    e = enricher()
    c.attr_names = e.dims.attr_names
    c.add(e.rows(record("10.102.2.7", "10.102.1.5", 1, 5432, 2, 2, 300, 400)
                 + record("10.102.3.9", "10.102.1.5", 2, 5432, 1, 0, 500, 400, cookie=12)))
    assert c.received == 2 and c.received_drops == 1
    assert c.drops[2] == 1
    assert c.policy[("default deny: production/database-security", 2)] == 1
    assert c.policy[(str(ALLOW_ORIGIN), 1)] == 1
    c.update_lost(2)  # one drop in flight: not lost yet
    assert c.lost == 0
    c.update_lost(1)
    assert c.lost == 0
    c.update_lost(4)
    c.update_lost(4)  # really lost: seen twice
    assert c.lost == 3


def test_old_wide_store_is_converted_without_losing_flows(tmp_path: Path) -> None:
    import sqlite3

    from meshctl.flows.enrich import WIDE_FIELDS
    from meshctl.flows.store import StoreError

    path = tmp_path / "node-1.db"
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE flows ({', '.join(WIDE_FIELDS)})")
    old = enricher()
    rows = old.wide(old.rows(record("10.102.2.7", "10.102.1.5", 40000, 5432, 2, 2, 300, 400, ts=7)
                             + record("10.102.3.9", "10.102.1.5", 1, 5432, 1, 0, 500, 400, cookie=12, ts=7)))
    db.executemany(f"INSERT INTO flows VALUES ({', '.join('?' * len(WIDE_FIELDS))})", rows)
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="old format"):
        FlowStore(path, readonly=True)
    FlowStore(path).close()  # the agent opens it read-write: converted
    with FlowStore(path, readonly=True) as ro:
        flows = [f for _, f in ro.query()]
    assert [(f.src_pod, f.verdict_name) for f in flows] == [
        ("production/cache", "DROPPED"), ("production/backend", "FORWARDED")]
    assert flows[1].time_ns == flows[0].time_ns + 1  # same stamp: kept unique, order kept
    assert "database-security" in flows[1].policy


def test_times_stay_unique_and_increasing_across_batches(tmp_path: Path) -> None:
    s = FlowStore(tmp_path / "n.db", "node-1")
    e = enricher(s.dims)
    same = record("10.102.2.7", "10.102.1.5", 1, 5432, 2, 2, 300, 400, ts=50)
    s.insert(e.rows(same * 3))
    s.close()
    again = FlowStore(tmp_path / "n.db", "node-1")  # a restarted agent continues after the newest
    e2 = Enricher(EnrichContext("node-1", catalog(), IPS), again.dims, e.offset_ns, again.last_ns)
    again.insert(e2.rows(same))
    times = [t for t, _ in again.query()]
    assert times == sorted(set(times)) and len(times) == 4

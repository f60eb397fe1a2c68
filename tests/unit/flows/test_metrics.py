"""/metrics in Hubble's shapes: rows from real ringbuf records through the enricher, scraped as
Prometheus text and parsed back with prometheus_client's own parser."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshctl.catalog import Catalog
from meshctl.flows.enrich import EVENT, EnrichContext, Enricher
from meshctl.flows.metrics import (
    DROP_REASONS,
    FlowCounters,
    MapFill,
    NodeSources,
    cookie_matches,
    key_match,
    registry_for,
)
from meshctl.nodestate import PROTO_TCP, PROTO_UDP, Direction, PolicyEntry, PolicyKey, ReservedIdentity
from meshctl.state import operations

ING, EGR = 0, 1
FWD, DROP = 1, 2


def record(verdict: int, reason: int, direction: int, proto: int = 6, cookie: int = 0,
           dport: int = 5432) -> bytes:
    return EVENT.pack(1_000, socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"), socket.htons(40000),
                      socket.htons(dport), proto, direction, verdict, reason, 300, 400, 7, cookie, 0x02, 60)


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(counters: FlowCounters, sources: NodeSources | None = None) -> Samples:
    """metric sample name -> [(labels, value)] of one scrape of the agent's registry."""
    text = generate_latest(registry_for(counters, sources)).decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


@pytest.fixture
def counters() -> FlowCounters:
    c = FlowCounters()
    e = Enricher(EnrichContext("node-1", Catalog(), {}), offset_ns=0)
    raw = (record(DROP, 2, ING) * 3 + record(DROP, 3, EGR, cookie=21) + record(DROP, 6, ING, PROTO_UDP)
           + record(FWD, 0, EGR, cookie=22) * 2 + record(FWD, 0, ING, cookie=23) + record(FWD, 1, EGR))
    c.add(e.rows(raw))
    c.matches.update({21: "l3-only", 22: "l3-l4", 23: "l4-only"})
    return c


def test_drops_are_reason_identifiers_with_protocol_and_direction(counters: FlowCounters) -> None:
    m = scrape(counters)
    drops = {(lab["reason"], lab["protocol"], lab["direction"]): v for lab, v in m["meshctl_drop_total"]}
    assert drops == {("POLICY_DENIED", "TCP", "ingress"): 3, ("POLICY_DENY", "TCP", "egress"): 1,
                     ("NO_ENDPOINT", "UDP", "ingress"): 1}
    assert all(r.isupper() and " " not in r for r in DROP_REASONS.values())


def test_policy_verdicts_by_direction_match_action_no_free_text(counters: FlowCounters) -> None:
    m = scrape(counters)
    got = {(lab["direction"], lab["match"], lab["action"]): v
           for lab, v in m["meshctl_policy_verdicts_total"]}
    assert got == {
        ("ingress", "none", "dropped"): 3,  # default deny: no entry matched
        ("egress", "l3-only", "dropped"): 1,  # an explicit deny entry
        ("egress", "l3-l4", "forwarded"): 2,
        ("ingress", "l4-only", "forwarded"): 1,
        ("egress", "all", "forwarded"): 1,  # not enforced: the allow-all of default enforcement
    }  # NO_ENDPOINT is not a policy verdict
    assert set(m["meshctl_policy_verdicts_total"][0][0]) == {"direction", "match", "action"}


def test_audit_flows_are_their_own_verdict_not_drops() -> None:
    """AUDIT (staged policies would decide otherwise) counts as Hubble's AUDIT verdict and action
    `audit`; it is neither a drop nor a forward, and the lost-drops estimate ignores it."""
    c = FlowCounters()
    e = Enricher(EnrichContext("node-1", Catalog(), {}), offset_ns=0)
    c.add(e.rows(record(4, 2, ING) * 2 + record(4, 0, EGR, cookie=22) + record(FWD, 1, ING)))
    c.matches.update({22: "l3-l4"})
    m = scrape(c)
    assert value(m, "meshctl_flows_processed_total", verdict="AUDIT") == 3
    assert value(m, "meshctl_drop_total") == 0 and c.received_drops == 0
    got = {(lab["direction"], lab["match"], lab["action"]): v
           for lab, v in m["meshctl_policy_verdicts_total"]}
    assert got == {("ingress", "none", "audit"): 2, ("egress", "l3-l4", "audit"): 1,
                   ("ingress", "all", "forwarded"): 1}


def test_no_node_label_anywhere_and_lost_is_a_counter(counters: FlowCounters) -> None:
    counters.update_lost(9)
    counters.update_lost(9)  # 9 counted by the datapath, 5 drop records received: 4 lost
    text = generate_latest(registry_for(counters)).decode()
    assert 'node="' not in text
    assert "# TYPE meshctl_flow_events_lost_total counter" in text
    assert value(scrape(counters), "meshctl_flow_events_lost_total") == 4
    processed = scrape(counters)["meshctl_flows_processed_total"]
    assert sum(v for _, v in processed) == 9 and {lab["type"] for lab, _ in processed} == {"PolicyVerdict"}


def test_process_platform_and_build_info(counters: FlowCounters) -> None:
    m = scrape(counters, NodeSources(version="1.2.3", datapath_build="abcdef012345"))
    (labels, v), = m["meshctl_build_info"]
    assert v == 1 and labels["version"] == "1.2.3" and labels["datapath_build"] == "abcdef012345"
    assert value(m, "process_resident_memory_bytes") > 0 and "python_info" in m


def test_map_pressure_per_map(counters: FlowCounters) -> None:
    fills = [MapFill("ct", 250, 1000), MapFill("ipcache", 0, 512000)]
    m = scrape(counters, NodeSources(maps=lambda: fills))
    assert value(m, "meshctl_bpf_map_pressure", map_name="ct") == 0.25
    assert value(m, "meshctl_bpf_map_pressure", map_name="ipcache") == 0
    assert value(m, "meshctl_bpf_map_capacity", map_name="ct") == 1000


def test_apply_and_drift_counters_and_durations(tmp_path: Path, counters: FlowCounters) -> None:
    operations.record(tmp_path, "apply", "success", 3.0)
    operations.record(tmp_path, "apply", "failure", 40.0)
    with pytest.raises(RuntimeError), operations.measured(tmp_path, "apply"):
        raise RuntimeError("stale plan")
    with operations.measured(tmp_path, "drift") as out:
        out["result"] = "clean"
    m = scrape(counters, NodeSources(operations=lambda: operations.read(tmp_path)))
    applies = {lab["result"]: v for lab, v in m["meshctl_apply_total"]}
    assert applies == {"success": 1, "failure": 1, "error": 1}
    assert {lab["result"]: v for lab, v in m["meshctl_drift_total"]} == {"clean": 1}
    assert value(m, "meshctl_apply_duration_seconds_count") == 3
    assert value(m, "meshctl_apply_duration_seconds_bucket", le="5.0") == 2  # the error and 3 s
    assert value(m, "meshctl_apply_duration_seconds_bucket", le="+Inf") == 3
    assert 43.0 <= value(m, "meshctl_apply_duration_seconds_sum") < 44.0


def test_operations_file_unreadable_counts_nothing(tmp_path: Path) -> None:
    (tmp_path / operations.FILE).write_text("{not json")
    assert operations.read(tmp_path) == {}
    operations.record(tmp_path, "drift", "drifted", 0.1)  # a broken file is replaced, not fatal
    assert operations.read(tmp_path)["drift"].results == {"drifted": 1}


@pytest.mark.parametrize(("key", "match"), [
    (PolicyKey(Direction.INGRESS, 300), "l3-only"),
    (PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 5432, 16), "l3-l4"),
    (PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 0, 0), "l3-proto"),
    (PolicyKey(Direction.EGRESS, ReservedIdentity.ANY, PROTO_UDP, 53, 16), "l4-only"),
    (PolicyKey(Direction.EGRESS, ReservedIdentity.ANY, PROTO_UDP, 0, 0), "proto-only"),
    (PolicyKey(Direction.EGRESS, ReservedIdentity.ANY), "all"),
])
def test_key_match_types(key: PolicyKey, match: str) -> None:
    assert key_match(key) == match


def test_cookie_matches_over_endpoints() -> None:
    policies = {
        1: {PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 5432, 16): PolicyEntry(cookie=7),
            PolicyKey(Direction.EGRESS, 400): PolicyEntry(cookie=8)},
        2: {PolicyKey(Direction.INGRESS, 301, PROTO_TCP, 5432, 16): PolicyEntry(cookie=7),
            PolicyKey(Direction.EGRESS, ReservedIdentity.ANY, PROTO_UDP, 53, 16): PolicyEntry(cookie=9)},
    }
    assert cookie_matches(policies) == {7: "l3-l4", 8: "l3-only", 9: "l4-only"}


def test_the_metrics_server_answers_the_kubelet_probes(counters: FlowCounters) -> None:
    """/healthz and /readyz say 200 or 503 with the reason; /metrics is still the registry."""
    import urllib.error
    import urllib.request

    from meshctl.flows.metrics import serve

    state = {"live": (True, "ok"), "ready": (False, "waiting for the node's datapath pins")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve(registry_for(counters), "127.0.0.1", port, live=lambda: state["live"],
                   ready=lambda: state["ready"])
    try:
        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

        assert get("/healthz") == (200, "ok\n")
        assert get("/readyz") == (503, "waiting for the node's datapath pins\n")
        state["ready"] = (True, "ok")
        assert get("/readyz") == (200, "ok\n")
        state["live"] = (False, "flow loop stalled for 31 s")
        assert get("/healthz") == (503, "flow loop stalled for 31 s\n")
        status, body = get("/metrics")
        assert status == 200 and "meshctl_build_info" in body
    finally:
        server.shutdown()
        server.server_close()

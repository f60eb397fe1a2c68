"""The drop gate with the plan's predictions: arithmetic, the flow-store source, the engine's wiring."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from meshctl.apply.engine import ApplyEngine, NodeWork, RolloutSettings
from meshctl.apply.flowdrops import StoreDropSource, count_drops, drop_key
from meshctl.apply.gates import (
    DropKey,
    flow_drop_gate,
    no_flows_note,
    predicted_drop_keys,
)
from meshctl.flows.flow import Flow
from meshctl.flows.store import FlowStore, store_path
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState


@dataclass(frozen=True)
class Row:
    src: str
    dst: str
    protocol: str
    port: int
    before: str
    after: str


CUT: DropKey = ("demo/frontend", "demo/api", 3000, "tcp")
OLD: DropKey = ("demo/frontend", "demo/database", 5432, "tcp")
DENY, NO_ENDPOINT = 2, 6  # enum flow_reason


def test_predicted_keys_are_the_pairs_that_go_forwarded_to_dropped() -> None:
    rows = [
        Row("demo/frontend", "demo/api", "TCP", 3000, "FORWARDED", "DROPPED"),
        Row("world", "demo/api", "udp", 53, "FORWARDED", "DROPPED"),
        Row("demo/api", "demo/database", "tcp", 5432, "DROPPED", "FORWARDED"),  # opens: no drop
    ]
    assert predicted_drop_keys(rows) == {CUT, ("world", "demo/api", 53, "udp")}
    assert predicted_drop_keys([]) == frozenset()


def test_predicted_drops_are_subtracted_the_rest_are_named() -> None:
    gate = flow_drop_gate("n1", {(CUT, DENY): 40, (OLD, DENY): 3}, {CUT}, window_s=1.0, threshold_per_s=0.0)
    assert (gate.drops, gate.predicted, gate.unexpected) == (43, 40, 3)
    assert gate.source == "flows"
    assert not gate.ok
    text = gate.describe()
    assert "43 drops" in text and "40 predicted" in text and "FAILED" in text
    assert "unexpected: demo/frontend -> demo/database:5432/tcp x3" in text


def test_only_predicted_drops_pass_a_zero_threshold() -> None:
    gate = flow_drop_gate("n1", {(CUT, DENY): 250}, {CUT}, window_s=2.0, threshold_per_s=0.0)
    assert gate.ok and gate.unexpected == 0 and gate.rate_per_s == 0.0
    assert "unexpected:" not in gate.describe()


@pytest.mark.parametrize(
    ("dropped", "window", "threshold", "ok"),
    [({}, 1.0, 0.0, True), ({OLD: 4}, 2.0, 2.0, True), ({OLD: 5}, 2.0, 2.0, False),
     ({OLD: 1, CUT: 100}, 1.0, 1.0, True), ({OLD: 2, CUT: 100}, 1.0, 1.0, False)],
)
def test_threshold_applies_to_the_unexpected_rate(dropped: dict[DropKey, int], window: float,
                                                  threshold: float, ok: bool) -> None:
    by_reason = {(k, DENY): n for k, n in dropped.items()}
    assert flow_drop_gate("n1", by_reason, {CUT}, window, threshold).ok is ok


def test_a_predicted_connection_dropped_without_an_endpoint_is_unexpected() -> None:
    """The plan predicts a policy cut; the same connection dropped for lack of an endpoint is a break."""
    dropped = {(CUT, DENY): 5, (CUT, NO_ENDPOINT): 7, (OLD, NO_ENDPOINT): 1}
    gate = flow_drop_gate("n1", dropped, {CUT}, 1.0, 0.0)
    assert (gate.drops, gate.predicted, gate.unexpected) == (13, 5, 8) and not gate.ok
    text = gate.describe()
    assert "13 drops in 1s (8 no endpoint, 5 default deny)" in text
    assert "unexpected: demo/frontend -> demo/api:3000/tcp x7 (no endpoint)" in text


def test_failing_gate_names_the_biggest_offenders_first_and_counts_the_rest() -> None:
    dropped = {(("a", "b", p, "tcp"), DENY): p for p in (1, 2, 3, 4, 5)}
    text = flow_drop_gate("n1", dropped, set(), 1.0, 0.0).describe()
    assert text.index("b:5/tcp x5") < text.index("b:4/tcp x4") < text.index("b:3/tcp x3")
    assert "b:2/tcp" not in text and "and 2 more" in text


def test_counter_fallback_says_predictions_were_not_subtracted() -> None:
    assert "could not be subtracted" in no_flows_note("n1")


def flow(src_ip: str, dst_ip: str, port: int, verdict: int = 2, reason: int = 2, proto: int = 6,
         src_pod: str = "", dst_pod: str = "", t: int = 0) -> Flow:
    return Flow(t, "n1", verdict, reason, 1, proto, src_ip, dst_ip, 40000, port, 300, 301,
                src_pod=src_pod, dst_pod=dst_pod)


PODS_BY_IP = {"10.1.0.2": "demo/frontend", "10.1.0.3": "demo/api"}


def test_drop_key_names_ends_by_address_then_by_the_agents_names_then_world() -> None:
    assert drop_key(flow("10.1.0.2", "10.1.0.3", 3000), PODS_BY_IP) == CUT
    assert drop_key(flow("10.9.9.9", "10.1.0.4", 5432, dst_pod="demo/database", src_pod="demo/frontend"),
                    PODS_BY_IP) == OLD
    world = flow("203.0.113.5", "10.1.0.3", 53, proto=17)
    assert drop_key(world, PODS_BY_IP) == ("world", "demo/api", 53, "udp")


def test_every_drop_reason_is_counted_with_its_reason() -> None:
    flows = [
        flow("10.1.0.2", "10.1.0.3", 3000),  # default deny
        flow("10.1.0.2", "10.1.0.3", 3000, reason=3),  # explicit deny
        flow("10.1.0.2", "10.1.0.3", 3000, verdict=1, reason=0),  # forwarded: not a drop
        flow("10.1.0.2", "10.1.0.3", 3000, reason=5),  # malformed
        flow("10.1.0.2", "10.1.0.3", 3000, reason=6),  # no endpoint
    ]
    assert count_drops(flows, PODS_BY_IP) == Counter({(CUT, 2): 1, (CUT, 3): 1, (CUT, 5): 1, (CUT, 6): 1})


# -- the flow store source, over a real SQLite store written the way the agent writes it


def write_flows(state_dir: Path, node: str, rows: list[tuple[int, int, int, str, str, int]]) -> None:
    """(time_ns, verdict, reason, src ip, dst ip, dst port) rows into the node's store."""
    with FlowStore(store_path(state_dir, node), node) as store:
        attr = store.dims.attribution("", "")
        out = []
        for t, verdict, reason, sip, dip, dport in rows:
            s = store.dims.peer(sip, 300, PODS_BY_IP.get(sip, ""), "")
            d = store.dims.peer(dip, 301, PODS_BY_IP.get(dip, ""), "")
            out.append((t, verdict, reason, 1, 6, 40000, dport, 2, 60, 0, s, d, attr))
        store.insert(out)


def test_store_source_counts_the_window_of_a_running_agent(tmp_path: Path) -> None:
    write_flows(tmp_path, "n1", [
        (100, 2, 2, "10.1.0.2", "10.1.0.3", 3000),  # before the window
        (200, 2, 2, "10.1.0.2", "10.1.0.3", 3000),
        (250, 1, 0, "10.1.0.2", "10.1.0.3", 3000),
        (300, 2, 3, "10.1.0.2", "10.1.0.4", 5432),
        (900, 2, 2, "10.1.0.2", "10.1.0.3", 3000),  # after: also shows the agent flushed
    ])
    source = StoreDropSource(tmp_path, lambda: {"n1": 1}, PODS_BY_IP, settle_s=5.0)
    started = time.monotonic()
    got = source("n1", 150, 500, counted=2)
    assert got == Counter({(CUT, 2): 1, (("demo/frontend", "10.1.0.4", 5432, "tcp"), 3): 1})
    assert time.monotonic() - started < 1.0  # flushed: no settle wait


def test_store_source_waits_a_settle_time_for_an_agent_that_has_not_flushed(tmp_path: Path) -> None:
    write_flows(tmp_path, "n1", [(200, 2, 2, "10.1.0.2", "10.1.0.3", 3000)])
    source = StoreDropSource(tmp_path, lambda: {"n1": 1}, PODS_BY_IP, settle_s=0.2)
    started = time.monotonic()
    assert source("n1", 150, 500, counted=3) == Counter({(CUT, 2): 1})  # counters saw 3: wait, then judge
    assert time.monotonic() - started >= 0.2


def test_store_source_is_none_without_an_agent_or_a_store(tmp_path: Path) -> None:
    write_flows(tmp_path, "n1", [(200, 2, 2, "10.1.0.2", "10.1.0.3", 3000)])
    assert StoreDropSource(tmp_path, dict, PODS_BY_IP)("n1", 0, 500, 1) is None  # agent not running
    assert StoreDropSource(tmp_path, lambda: {"n2": 1}, PODS_BY_IP)("n2", 0, 500, 1) is None  # no store


# -- the engine: which source judges, and what the gate is told


class Driver:
    """Two nodes in memory; n1 drops `per_sample` more packets at every counter read."""

    def __init__(self, per_sample: int) -> None:
        self.live = {n: NodeState(n) for n in ("n1", "n2")}
        self.per_sample, self.n = per_sample, 0

    def observe(self, node: str) -> NodeState:
        return self.live[node]

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        self.live[node] = target

    def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
        if node == "n1":
            self.n += self.per_sample
        return {(2, 2, 0): self.n if node == "n1" else 0}


class Journal:
    def begin(self, node: str, before: NodeState, after: NodeState) -> None: ...

    def done(self, node: str) -> None: ...

    def reverted(self, node: str) -> None: ...


def run_engine(driver: Driver, flows: dict[str, dict[DropKey, int]] | None, predicted: set[DropKey]):
    asked: list[tuple[str, int, int, int]] = []

    def source(node: str, since: int, until: int, counted: int) -> dict[tuple[DropKey, int], int] | None:
        asked.append((node, since, until, counted))
        return None if flows is None else {(k, DENY): n for k, n in flows.get(node, {}).items()}

    clock = iter(range(1000, 10**6, 1000))
    engine = ApplyEngine(driver, Journal(), lambda c: None, RolloutSettings(verify_window_s=1.0),  # type: ignore[arg-type,return-value]
                         sleep=lambda _s: None, flow_drops=source if flows is not None else None,
                         now_ns=lambda: next(clock))
    target = FrozenMap({IPv4Network("10.0.1.0/24"): IpcacheEntry(256)})
    work = [NodeWork(n, NodeState(n), NodeState(n, ipcache=target)) for n in ("n1", "n2")]
    return engine.run(work, ["n1", "n2"], predicted_keys=predicted), asked


def test_engine_subtracts_predicted_flows_and_passes() -> None:
    result, asked = run_engine(Driver(per_sample=20), {"n1": {CUT: 20}}, {CUT})
    assert result.ok, result.failure
    assert [(g.node, g.source, g.drops, g.predicted) for g in result.gates] == [("n1", "flows", 20, 20),
                                                                               ("n2", "flows", 0, 0)]
    assert asked[0] == ("n1", 1000, 2000, 20)  # the window around the sleep, and the counters' count


def test_engine_fails_and_reverts_on_unpredicted_flows() -> None:
    driver = Driver(per_sample=23)
    result, _ = run_engine(driver, {"n1": {CUT: 20, OLD: 3}}, {CUT})
    assert not result.ok
    assert "drop gate n1" in result.failure and "demo/database:5432/tcp x3" in result.failure
    assert result.reverted == ["n1"] and driver.live["n1"] == NodeState("n1")


def test_engine_without_flows_judges_counters_and_says_so() -> None:
    result, asked = run_engine(Driver(per_sample=20), None, {CUT})
    assert not result.ok  # the 20 predicted drops could not be told apart
    assert asked == []
    gate = result.gates[0]
    assert (gate.source, gate.drops, gate.predicted) == ("counters", 20, 0)
    assert "could not be subtracted" in gate.describe()


class FakeAgent:
    def __init__(self, rows: list[list[object]] | None) -> None:
        self.rows, self.asked = rows, []  # type: ignore[var-annotated]

    def window_drops(self, since: int, until: int, counted: int) -> list[list[object]] | None:
        self.asked.append((since, until, counted))
        return self.rows


def test_agent_source_names_the_agents_rows_like_the_store_source() -> None:
    from meshctl.apply.flowdrops import AgentDropSource, wire_rows

    flows = [flow("10.1.0.2", "10.1.0.3", 3000), flow("10.1.0.2", "10.1.0.3", 3000),
             flow("10.9.9.9", "10.1.0.4", 5432, reason=6, dst_pod="demo/database", src_pod="demo/frontend"),
             flow("10.1.0.2", "10.1.0.3", 3000, verdict=1, reason=0)]
    agent = FakeAgent(wire_rows(flows))
    got = AgentDropSource(lambda node: agent, PODS_BY_IP)("n1", 10, 20, 3)
    assert got == Counter({(CUT, 2): 2, (OLD, 6): 1}) and agent.asked == [(10, 20, 3)]
    assert AgentDropSource(lambda node: FakeAgent(None), PODS_BY_IP)("n1", 10, 20, 3) is None  # no store

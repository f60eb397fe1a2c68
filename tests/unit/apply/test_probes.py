"""Verify probes: which connections a wave makes, how strictly they are judged, and what the engine
then calls verified.

Two nodes, NodeStates built by hand: n1 holds pods a (10.0.1.2) and b (10.0.1.3), n2 holds c
(10.0.2.2). b is ingress-isolated and allows a on 80/TCP only; everything else is not enforced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from meshctl.apply.engine import ApplyEngine, NodeWork, RolloutSettings
from meshctl.apply.gates import CheckOutcome, ProbeAttempt, WitnessedDrop
from meshctl.apply.probes import Probe, judge, plan_wave_probes
from meshctl.apply.witness import LabWitness, matching_drops
from meshctl.flows.flow import Flow
from meshctl.flows.store import FlowStore
from meshctl.nodestate import (
    PROTO_TCP,
    Attachment,
    Direction,
    EndpointEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.plan.impact import PodTarget

A, B, C = IPv4Address("10.0.1.2"), IPv4Address("10.0.1.3"), IPv4Address("10.0.2.2")
ID_A, ID_B, ID_C = 256, 257, 258
IPCACHE = FrozenMap({IPv4Network(f"{ip}/32"): IpcacheEntry(i) for ip, i in ((A, ID_A), (B, ID_B), (C, ID_C))})
PODS = [PodTarget("d/a", A, (("TCP", 80),)), PodTarget("d/b", B, (("TCP", 80), ("TCP", 81))),
        PodTarget("d/c", C, (("TCP", 80),))]
POD_NODES = {"d/a": "n1", "d/b": "n1", "d/c": "n2"}
DENY, NO_ENDPOINT = 2, 6


def n1(b_allows_a: bool = True) -> NodeState:
    policy = {PolicyKey(Direction.INGRESS, ID_A, PROTO_TCP, 80, 16): PolicyEntry(7)} if b_allows_a else {}
    return NodeState("n1", ipcache=IPCACHE,
                     endpoints=FrozenMap({A: EndpointEntry(1, ID_A, False, False),
                                          B: EndpointEntry(2, ID_B, True, False)}),
                     policies=FrozenMap({2: FrozenMap(policy)}))


def n2() -> NodeState:
    return NodeState("n2", ipcache=IPCACHE, endpoints=FrozenMap({C: EndpointEntry(3, ID_C, False, False)}))


@dataclass(frozen=True)
class Row:
    src: str
    dst: str
    protocol: str
    port: int
    before: str
    after: str


def test_impact_pairs_the_node_enforces_are_probed_with_the_emulators_expectation() -> None:
    rows = [Row("d/a", "d/b", "tcp", 80, "DROPPED", "FORWARDED"),
            Row("d/a", "d/b", "tcp", 81, "FORWARDED", "DROPPED"),
            Row("world", "d/b", "tcp", 80, "FORWARDED", "DROPPED"),  # not from a pod: never probed
            Row("d/c", "d/b", "tcp", 80, "FORWARDED", "DROPPED")]  # spans n2, not final yet
    got = plan_wave_probes(["n1"], {"n1"}, {"n1": n1(), "n2": n2()}, PODS, POD_NODES, impact=rows)
    assert [(p.name, p.from_, p.to, p.port, p.expect, p.nodes) for p in got.probes] == [
        ("must now pass", "d/a", "d/b", 80, "allowed", ("n1",)),
        ("must now drop", "d/a", "d/b", 81, "denied", ("n1",)),
    ]
    # once n2 is final too, the cross-node pair is probed (c -> b is default deny at b)
    later = plan_wave_probes(["n2"], {"n1", "n2"}, {"n1": n1(), "n2": n2()}, PODS, POD_NODES, impact=rows)
    got_later = [(p.from_, p.to, p.expect, p.nodes) for p in later.probes if p.origin == "impact"]
    assert got_later == [("d/c", "d/b", "denied", ("n2", "n1"))]
    # n2 had no probe expecting "allowed": emulated ones fill in (nothing isolates a or c); c -> b
    # drops at b on n1, and nothing can drop on n2, so no denied probe tests n2 itself
    emulated = [(p.from_, p.to, p.expect) for p in later.probes if p.origin == "probe"]
    assert emulated == [("d/c", "d/a", "allowed"), ("d/a", "d/c", "allowed")]


def test_a_stale_impact_row_the_live_mix_contradicts_is_not_probed() -> None:
    rows = [Row("d/a", "d/b", "tcp", 80, "DROPPED", "FORWARDED")]  # but b allows nothing now
    got = plan_wave_probes(["n1"], {"n1"}, {"n1": n1(b_allows_a=False), "n2": n2()}, PODS, POD_NODES,
                           impact=rows)
    assert all(p.origin != "impact" for p in got.probes)


def test_impact_sample_is_bounded_and_spread() -> None:
    ports = tuple(("TCP", p) for p in range(1000, 1020))
    pods = [PodTarget("d/a", A), PodTarget("d/b", B, ports)]
    rows = [Row("d/a", "d/b", "tcp", p, "FORWARDED", "DROPPED") for _, p in ports]
    got = plan_wave_probes(["n1"], {"n1"}, {"n1": n1()}, pods, POD_NODES, impact=rows)
    assert [p.port for p in got.probes] == [1000, 1005, 1010, 1015]  # 4 of 20, evenly spaced
    assert got.probes == plan_wave_probes(["n1"], {"n1"}, {"n1": n1()}, pods, POD_NODES, impact=rows).probes


def test_a_node_without_impact_gets_emulated_pairs_of_both_kinds() -> None:
    got = plan_wave_probes(["n1"], {"n1"}, {"n1": n1(), "n2": n2()}, PODS, POD_NODES)
    pairs = [(p.from_, p.to, p.port, p.expect, p.origin) for p in got.probes]
    assert ("d/a", "d/b", 80, "allowed", "probe") in pairs
    assert ("d/a", "d/b", 81, "denied", "probe") in pairs
    assert got.count("n1") == len(pairs) and not got.unprobed


def test_no_endpoint_verdicts_are_never_expected_as_denied() -> None:
    """n2 at its before-state has programs but no endpoints: pairs into it drop with no-endpoint."""
    hooks = frozenset(Attachment(C, h, "b") for h in ("from-pod", "to-pod"))
    empty = NodeState("n2", ipcache=IPCACHE, attachments=hooks)
    pods = [PodTarget("d/a", A), PodTarget("d/c", C, (("TCP", 80),))]
    got = plan_wave_probes(["n1"], {"n1"}, {"n1": n1(), "n2": empty}, pods, POD_NODES)
    assert got.probes == [] and got.unprobed == {"n1": "no pod pair with a declared port to probe"}
    none = plan_wave_probes(["n2"], {"n2"}, {"n2": empty}, pods, POD_NODES)
    assert none.unprobed == {"n2": "no endpoints: nothing to probe"}


@dataclass(frozen=True)
class Check:
    name: str
    from_: str
    to: str
    port: int = 80
    protocol: str = "TCP"
    expect: str = "allowed"


def test_repo_checks_all_run_even_when_they_contradict() -> None:
    checks = [Check("ok", "d/a", "d/b"), Check("wrong", "d/a", "d/b", expect="denied")]
    got = plan_wave_probes(["n1"], {"n1"}, {"n1": n1()}, PODS, POD_NODES, checks=checks)
    assert [p.name for p in got.probes if p.origin == "check"] == ["ok", "wrong"]


def test_a_check_naming_no_pod_of_the_cluster_runs_in_the_first_wave_to_fail() -> None:
    checks = [Check("ghost", "d/ghost", "d/phantom")]
    first = plan_wave_probes(["n1"], {"n1"}, {"n1": n1()}, PODS, POD_NODES, checks=checks, first_wave=True)
    assert [(p.name, p.nodes) for p in first.probes if p.origin == "check"] == [("ghost", ("n1",))]
    later = plan_wave_probes(["n1"], {"n1"}, {"n1": n1()}, PODS, POD_NODES, checks=checks)
    assert all(p.origin != "check" for p in later.probes)


PROBE = Probe("p", "d/a", "d/b", 81, "TCP", "denied")


def test_denied_needs_a_recorded_policy_drop() -> None:
    ok = judge(PROBE, False, "timed out", [WitnessedDrop("n1", DENY)])
    assert ok.ok and ok.observed == "denied" and "default deny drop on n1 (flow store)" in ok.describe()
    silent = judge(PROBE, False, "Connection refused", [])
    assert not silent.ok and silent.observed == "error"
    assert "ERROR (connection Connection refused but the datapath recorded no drop of it" in silent.describe()
    no_ep = judge(PROBE, False, "timed out", [WitnessedDrop("n1", NO_ENDPOINT, 1, "counters")])
    assert not no_ep.ok and "dropped it with no endpoint on n1, not by policy" in no_ep.describe()
    mixed = judge(PROBE, False, "timed out", [WitnessedDrop("n1", DENY), WitnessedDrop("n2", NO_ENDPOINT)])
    assert mixed.observed == "error"


def test_allowed_needs_a_completed_connection() -> None:
    probe = Probe("p", "d/a", "d/b", 80, "TCP", "allowed")
    assert judge(probe, True, "", []).ok
    blocked = judge(probe, False, "timed out", [WitnessedDrop("n1", DENY)])
    assert not blocked.ok and "expected allowed, observed denied: FAILED" in blocked.describe()
    leaked = judge(PROBE, True, "", [])
    assert not leaked.ok and "observed allowed: FAILED" in leaked.describe()


ATTEMPT = ProbeAttempt("10.0.1.2", "10.0.1.3", 40001, 81, "TCP", 1_000, 2_000, False, "timed out")


def flow(sport: int, reason: int = DENY, verdict: int = 2, t: int = 1_500, dport: int = 81) -> Flow:
    return Flow(t, "n1", verdict, reason, 0, 6, "10.0.1.2", "10.0.1.3", sport, dport, ID_A, ID_B)


def test_matching_drops_are_this_connection_only() -> None:
    flows = [flow(40001), flow(40001, reason=NO_ENDPOINT), flow(40002), flow(40001, verdict=1, reason=0),
             flow(40001, dport=80)]
    assert matching_drops(flows, ATTEMPT) == Counter({DENY: 1, NO_ENDPOINT: 1})


def test_witness_reads_the_store_of_a_node_with_an_agent_and_counters_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "n1.db"
    with FlowStore(path, "n1") as store:
        attr = store.dims.attribution("", "")
        s = store.dims.peer("10.0.1.2", ID_A, "d/a", "")
        d = store.dims.peer("10.0.1.3", ID_B, "d/b", "")
        store.insert([(1_500, 2, DENY, 0, 6, 40001, 81, 2, 60, 0, s, d, attr),
                      (1_600, 2, DENY, 0, 6, 40009, 81, 2, 60, 0, s, d, attr)])
    counts = {"n2": [{(2, NO_ENDPOINT, 0): 5}, {(2, NO_ENDPOINT, 0): 6}]}
    witness = LabWitness(lambda n: path if n == "n1" else None, lambda n: counts[n].pop(0), settle_s=0.0)
    snap = witness.snapshot(["n1", "n2"])
    assert set(snap) == {"n2"}  # counters only where no store
    got = witness.drops(["n1", "n2"], ATTEMPT, snap)
    assert got == [WitnessedDrop("n2", NO_ENDPOINT, 1, "counters"), WitnessedDrop("n1", DENY, 1, "flows")]
    only_n1 = LabWitness(lambda n: path, dict, visible={"n1"}, settle_s=0.0)
    assert [d.node for d in only_n1.drops(["n1", "n2"], ATTEMPT, {})] == ["n1"]


# -- the engine: probes inside the window, strict outcomes, "verified" only where a probe ran


class Driver:
    def __init__(self, live: dict[str, NodeState]) -> None:
        self.live = dict(live)

    def observe(self, node: str) -> NodeState:
        return self.live[node]

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        self.live[node] = target

    def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
        return {}


class Journal:
    def begin(self, node: str, before: NodeState, after: NodeState) -> None: ...

    def done(self, node: str) -> None: ...

    def reverted(self, node: str) -> None: ...


def run(runner: object) -> object:
    before = NodeState("n1", ipcache=IPCACHE)  # no endpoints yet: the first apply
    work = [NodeWork("n1", before, n1()), NodeWork("n2", NodeState("n2"), NodeState("n2"))]
    engine = ApplyEngine(Driver({"n1": before, "n2": NodeState("n2")}), Journal(), runner,  # type: ignore[arg-type]
                         RolloutSettings(verify_window_s=0.0), sleep=lambda _s: None)
    return engine.run(work, ["n1", "n2"], pod_nodes=POD_NODES, pods=PODS)


def test_engine_runs_emulated_probes_and_calls_the_node_verified() -> None:
    ran: list[Probe] = []

    def runner(p: Probe) -> CheckOutcome:
        ran.append(p)
        drops = [] if p.expect == "allowed" else [WitnessedDrop("n1", DENY)]
        return judge(p, p.expect == "allowed", "", drops)

    result = run(runner)
    assert result.ok, result.failure  # type: ignore[attr-defined]
    assert ran and {p.expect for p in ran} == {"allowed", "denied"}
    assert result.verified == {"n1": len(ran)}  # type: ignore[attr-defined]


def test_engine_fails_and_reverts_a_node_whose_probe_errs() -> None:
    def runner(p: Probe) -> CheckOutcome:
        return judge(p, False, "timed out", [WitnessedDrop("n1", NO_ENDPOINT)])

    result = run(runner)
    assert not result.ok and result.reverted == ["n1"]  # type: ignore[attr-defined]
    assert "ERROR" in result.failure and "no endpoint" in result.failure  # type: ignore[attr-defined]


def test_a_denied_probe_tests_the_node_that_drops_it() -> None:
    """c -> b drops at b (n1); n2 isolates c too, so n2 gets a denied pair that drops on n2 itself."""
    isolated = NodeState("n2", ipcache=IPCACHE, endpoints=FrozenMap({C: EndpointEntry(3, ID_C, True, False)}))
    rows = [Row("d/c", "d/b", "tcp", 80, "FORWARDED", "DROPPED")]
    got = plan_wave_probes(["n2"], {"n1", "n2"}, {"n1": n1(), "n2": isolated}, PODS, POD_NODES, impact=rows)
    emulated = [(p.from_, p.to, p.expect) for p in got.probes if p.origin == "probe"]
    assert ("d/a", "d/c", "denied") in emulated and ("d/c", "d/b", "denied") not in emulated

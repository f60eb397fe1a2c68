"""The engine's orchestration: order, journal before touching, verify, revert exactly, stop.

The driver here is an in-memory table of node states (the kernel side is covered by the
privileged tests); it records every call so order and journalling can be asserted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network

from meshctl.apply.engine import ApplyEngine, NodeWork, RolloutSettings
from meshctl.apply.gates import CheckOutcome
from meshctl.errors import DataplaneError
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState


def state(node: str, *identities: int) -> NodeState:
    return NodeState(
        node, ipcache=FrozenMap({IPv4Network(f"10.0.{i}.0/24"): IpcacheEntry(i) for i in identities})
    )


@dataclass
class MemDriver:
    live: dict[str, NodeState]
    fail_reconcile: set[str] = field(default_factory=set)
    drops: dict[str, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def observe(self, node: str) -> NodeState:
        return self.live[node]

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        self.calls.append(f"reconcile {node}")
        if node in self.fail_reconcile and target.ipcache:
            self.live[node] = state(node, 99)  # half-applied garbage, then an error
            raise DataplaneError("map_update", f"{node}/ipcache", 28)
        self.live[node] = target

    def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
        self.calls.append(f"drops {node}")
        return {(2, 2, 0): self.drops.get(node, 0)}


@dataclass
class MemJournal:
    records: list[tuple[str, str]] = field(default_factory=list)

    def begin(self, node: str, before: NodeState, after: NodeState) -> None:
        self.records.append(("begin", node))

    def done(self, node: str) -> None:
        self.records.append(("done", node))

    def reverted(self, node: str) -> None:
        self.records.append(("reverted", node))


@dataclass(frozen=True)
class Check:
    name: str
    from_: str
    to: str
    port: int = 80
    protocol: str = "TCP"
    expect: str = "allowed"


NODES = ["n1", "n2", "n3"]
PODS = {"d/a": "n1", "d/b": "n2", "d/c": "n3"}


def setup(settings: RolloutSettings, **driver_kw: object) -> tuple[MemDriver, MemJournal, list[NodeWork]]:
    driver = MemDriver({n: state(n) for n in NODES}, **driver_kw)  # type: ignore[arg-type]
    work = [NodeWork(n, state(n), state(n, i + 1)) for i, n in enumerate(NODES)]
    return driver, MemJournal(), work


def engine(driver: MemDriver, journal: MemJournal, settings: RolloutSettings, bad: set[str] = frozenset()):
    def run_check(check: Check) -> CheckOutcome:  # type: ignore[override]
        observed = "denied" if check.name in bad else check.expect
        return CheckOutcome(check, observed)

    return ApplyEngine(driver, journal, run_check, settings, sleep=lambda _s: None)


def test_success_applies_canary_first_and_journals_before_touching() -> None:
    settings = RolloutSettings(canary=("n2",), batch_size=2, verify_window_s=0.5)
    driver, journal, work = setup(settings)
    result = engine(driver, journal, settings).run(work, NODES, [Check("ab", "d/a", "d/b")], PODS)
    assert result.ok, result.failure
    assert [w.nodes for w in result.waves] == [("n2",), ("n1", "n3")]
    reconciles = [c for c in driver.calls if c.startswith("reconcile")]
    assert reconciles == ["reconcile n2", "reconcile n1", "reconcile n3"]
    assert journal.records[:2] == [("begin", "n2"), ("done", "n2")]
    assert dict(driver.live) == {w.node: w.target for w in work}
    assert result.applied == ["n2", "n1", "n3"]
    # the cross-node check waited for n1 and n2 to be final, and ran once
    assert [o.check.name for o in result.checks] == ["ab"]


def test_failed_check_reverts_wave_and_stops() -> None:
    settings = RolloutSettings(canary=("n1",), batch_size=1, verify_window_s=0.5)
    driver, journal, work = setup(settings)
    checks = [Check("ab", "d/a", "d/b"), Check("bc", "d/b", "d/c")]
    result = engine(driver, journal, settings, bad={"bc"}).run(work, NODES, checks, PODS)
    assert not result.ok
    assert "bc" in result.failure and "expected allowed, observed denied" in result.failure
    # n1 and n2 verified (ab ok); bc completes with n3, fails: only n3 is reverted (rollback node)
    assert result.applied == ["n1", "n2"]
    assert result.reverted == ["n3"]
    assert driver.live["n3"] == state("n3")
    assert driver.live["n1"] == work[0].target
    assert ("reverted", "n3") in journal.records


def test_rollback_all_reverts_every_wave_newest_first() -> None:
    settings = RolloutSettings(canary=("n1",), batch_size=1, verify_window_s=0.5, rollback="all")
    driver, journal, work = setup(settings)
    result = engine(driver, journal, settings, bad={"bc"}).run(
        work, NODES, [Check("bc", "d/b", "d/c")], PODS
    )
    assert not result.ok
    assert result.reverted == ["n3", "n2", "n1"]
    assert result.applied == []
    assert driver.live == {n: state(n) for n in NODES}


def test_reconcile_error_half_applied_node_is_restored_exactly() -> None:
    settings = RolloutSettings(canary=("n1",), verify_window_s=0.5)
    driver, journal, work = setup(settings, fail_reconcile={"n1"})
    result = engine(driver, journal, settings).run(work, NODES)
    assert not result.ok
    assert "reconcile failed" in result.failure and "n1/ipcache" in result.failure
    assert result.reverted == ["n1"]
    assert driver.live["n1"] == state("n1")
    # stopped: the other nodes were never touched
    assert "reconcile n2" not in driver.calls


def test_drop_gate_failure_reverts() -> None:
    settings = RolloutSettings(verify_window_s=1.0, drop_rate_threshold=1.0)
    driver, journal, work = setup(settings)

    class Dropping(MemDriver):
        def drop_counts(self, node: str) -> dict[tuple[int, int, int], int]:
            self.drops[node] = self.drops.get(node, 0) + (5 if node == "n1" else 0)
            return {(2, 2, 0): self.drops[node]}

    dropping = Dropping(driver.live)
    result = engine(dropping, journal, settings).run(work, NODES)
    assert not result.ok
    assert "drop gate n1" in result.failure
    assert dropping.live["n1"] == state("n1")
    assert result.gates[0].unexpected == 5


def test_nodes_without_changes_are_skipped() -> None:
    settings = RolloutSettings(canary=("n1",))
    driver, journal, work = setup(settings)
    work[0] = NodeWork("n1", state("n1"), state("n1"))
    result = engine(driver, journal, settings).run(work, NODES)
    assert result.ok
    assert [w.nodes for w in result.waves] == [("n2",), ("n3",)]
    assert "reconcile n1" not in driver.calls

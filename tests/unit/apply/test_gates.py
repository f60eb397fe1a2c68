"""Verification gates: which checks run mid-rollout, and the drop-rate gate."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from meshctl.apply.gates import (
    CheckOutcome,
    check_nodes,
    checks_for_wave,
    drop_gate,
    drops_by_reason,
    policy_drops,
)


@dataclass(frozen=True)
class Check:
    name: str
    from_: str
    to: str
    port: int = 80
    protocol: str = "TCP"
    expect: str = "allowed"


PODS = {"d/a": "n1", "d/b": "n2", "d/c": "n1", "d/e": "n3"}


def test_check_nodes() -> None:
    assert check_nodes(Check("x", "d/a", "d/b"), PODS) == ("n1", "n2")
    assert check_nodes(Check("x", "d/a", "d/c"), PODS) == ("n1",)
    assert check_nodes(Check("x", "d/a", "192.0.2.1"), PODS) == ("n1",)


def test_cross_node_check_waits_for_both_nodes() -> None:
    ab = Check("ab", "d/a", "d/b")
    ac = Check("ac", "d/a", "d/c")
    # canary n1 applied, n2 still old: only the n1-local check is meaningful
    got = checks_for_wave([ab, ac], PODS, final_nodes={"n1"}, wave_nodes={"n1"})
    assert [p.check.name for p in got] == ["ac"]
    # n2 follows: now ab runs, ac is not repeated
    got = checks_for_wave([ab, ac], PODS, final_nodes={"n1", "n2"}, wave_nodes={"n2"})
    assert [p.check.name for p in got] == ["ab"]


def test_unchanged_node_counts_as_final() -> None:
    ae = Check("ae", "d/a", "d/e")
    got = checks_for_wave([ae], PODS, final_nodes={"n1", "n3"}, wave_nodes={"n1"})
    assert [p.nodes for p in got] == [("n1", "n3")]
    # a check touching no node of the wave is not (re)run
    assert checks_for_wave([ae], PODS, final_nodes={"n1", "n2", "n3"}, wave_nodes={"n2"}) == []


def test_check_to_a_service_address_waits_for_its_backends_nodes() -> None:
    """client (n1) -> ClusterIP whose backends run on n2 and n3: only after n1, n2, n3 are final."""
    vip = Check("vip", "d/a", "10.96.0.10")
    fronts = {"10.96.0.10": ("n2", "n3")}
    assert check_nodes(vip, PODS, fronts) == ("n1", "n2", "n3")
    assert checks_for_wave([vip], PODS, final_nodes={"n1"}, wave_nodes={"n1"}, frontend_nodes=fronts) == []
    got = checks_for_wave([vip], PODS, final_nodes={"n1", "n2", "n3"}, wave_nodes={"n3"},
                          frontend_nodes=fronts)
    assert [p.check.name for p in got] == ["vip"]
    # an address that is no service stays a check of the source node only
    assert check_nodes(Check("x", "d/a", "192.0.2.1"), PODS, fronts) == ("n1",)


def test_check_outcome_judges_expectation() -> None:
    c = Check("db", "d/a", "d/b", 5432, expect="denied")
    assert CheckOutcome(c, "denied").ok
    bad = CheckOutcome(c, "allowed", "connected")
    assert not bad.ok
    assert "expected denied, observed allowed: FAILED" in bad.describe()


def test_policy_drops_counts_only_policy_reasons() -> None:
    before = {(2, 2, 0): 10, (2, 3, 1): 1, (2, 4, 0): 100, (1, 0, 0): 50}
    after = {(2, 2, 0): 15, (2, 3, 1): 3, (2, 4, 0): 900, (1, 0, 0): 5000, (2, 2, 1): 4}
    assert policy_drops(before, after) == 5 + 2 + 4
    assert drops_by_reason(before, after) == {2: 9, 3: 2, 4: 800}  # forwarded packets never count


def test_counter_gate_counts_every_reason_and_subtracts_only_policy_drops() -> None:
    """A node whose endpoints vanished drops with no-endpoint: that fails the gate even in the
    counters' mode, and the probes' own policy drops cannot explain it away."""
    gate = drop_gate("n1", {}, {(2, 6, 1): 30, (2, 2, 0): 2}, 1.0, 0.0, predicted=50)
    assert (gate.drops, gate.predicted, gate.unexpected) == (32, 2, 30) and not gate.ok
    assert "32 drops in 1s (30 no endpoint, 2 default deny)" in gate.describe()


def test_counter_reset_counts_from_zero() -> None:
    assert policy_drops({(2, 2, 0): 100}, {(2, 2, 0): 7}) == 7


@pytest.mark.parametrize(
    ("drops", "predicted", "window", "threshold", "ok"),
    [(0, 0, 2.0, 0.0, True), (4, 0, 2.0, 2.0, True), (5, 0, 2.0, 2.0, False), (10, 8, 1.0, 2.0, True),
     (3, 10, 1.0, 0.0, True), (1, 0, 1.0, 0.0, False)],
)
def test_drop_gate(drops: int, predicted: int, window: float, threshold: float, ok: bool) -> None:
    result = drop_gate("n1", {}, {(2, 2, 0): drops}, window, threshold, predicted)
    assert result.ok is ok
    assert result.unexpected == max(0, drops - predicted)
    assert ("ok" if ok else "FAILED") in result.describe()

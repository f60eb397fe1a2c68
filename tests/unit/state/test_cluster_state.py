"""The state as the nodes hold it (meshctl.state.cluster): shares, their union, and what is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshctl.errors import StateError
from meshctl.nodestate import NodeState
from meshctl.state import State
from meshctl.state.cluster import merge_shares, node_share, share_of

NODES = ("node-1", "node-2", "node-3")


def applied(serial_from: State, nodes: tuple[str, ...] = NODES, plan: str = "sha256:p") -> State:
    state = serial_from.record_apply(plan, {n: NodeState(n) for n in nodes})
    return state if state.lineage else replace(state, lineage="lineage-a")


def shares_of(state: State, nodes: tuple[str, ...] = NODES) -> dict[str, State | None]:
    return {n: share_of(node_share(state, n), n) for n in nodes}


def test_a_share_carries_the_cluster_part_and_only_its_node() -> None:
    state = applied(State().with_tables({"next": 257, "ids": {"a": 256}}, {"node-1": {"x": 1}}))
    share = share_of(node_share(state, "node-2"), "node-2")
    assert (share.lineage, share.serial, share.identities) == (state.lineage, 1, state.identities)
    assert set(share.nodes) == {"node-2"} and share.nodes["node-2"] == state.nodes["node-2"]
    with pytest.raises(ValueError, match="not a share of node node-1"):
        share_of(node_share(state, "node-2"), "node-1")


def test_a_runner_without_local_state_gets_lineage_serial_and_tables_from_the_nodes() -> None:
    state = applied(applied(State().with_tables({"next": 258}, {})))
    cluster = merge_shares(State(), shares_of(state))
    assert (cluster.state.lineage, cluster.state.serial) == (state.lineage, 2)
    assert cluster.state.identities == {"next": 258}
    assert sorted(cluster.state.nodes) == list(NODES) and cluster.mixed() is None


def test_nodes_behind_the_newest_serial_are_named() -> None:
    first = applied(State())
    second = applied(first, ("node-1",))  # a plan limited with --node node-1
    shares = {**shares_of(first, ("node-2", "node-3")), **shares_of(second, ("node-1",))}
    cluster = merge_shares(State(), shares)
    assert cluster.state.serial == 2
    assert cluster.mixed() == "the nodes hold different state serials: node-1 at 2; node-2, node-3 at 1"


def test_the_nodes_win_over_an_older_or_foreign_local_state() -> None:
    nodes_state = applied(applied(State()))
    stale_local = replace(applied(State()), lineage="lineage-a")  # serial 1 of the same lineage
    assert merge_shares(stale_local, shares_of(nodes_state)).state.serial == 2
    foreign = replace(applied(applied(applied(State()))), lineage="elsewhere")
    assert merge_shares(foreign, shares_of(nodes_state)).state.lineage == "lineage-a"


def test_a_node_without_a_share_is_not_applied_unless_the_local_state_is_the_base() -> None:
    state = applied(State())
    shares = {**shares_of(state, ("node-1", "node-2")), "node-3": None}  # node-3 uninstalled elsewhere
    assert sorted(merge_shares(State(), shares).state.nodes) == ["node-1", "node-2"]
    assert sorted(merge_shares(state, shares).state.nodes) == list(NODES)  # the local state knows it


def test_nothing_on_the_nodes_keeps_the_local_state() -> None:
    local = applied(State())
    assert merge_shares(local, dict.fromkeys(NODES)).state is local


def test_two_lineages_on_one_cluster_are_refused() -> None:
    a, b = applied(State()), replace(applied(State()), lineage="lineage-b")
    shares = {**shares_of(a, ("node-1",)), **shares_of(b, ("node-2",))}
    with pytest.raises(StateError, match=r"lineages \(node-1: lineage-a; node-2: lineage-b\)"):
        merge_shares(State(), shares)

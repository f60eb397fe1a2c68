"""Stale plans name what moved: per-component digests in the plan, drift entries from the state."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "golden"))
from golden_scenario import catalog, make_plan, observed

from meshctl.nodestate import (
    PROTO_TCP,
    DatapathConfig,
    Direction,
    EndpointEntry,
    FrozenMap,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.plan import read_plan, write_plan
from meshctl.plan.digests import NodeDigests, moved, pack_ids, unpack_ids
from meshctl.plan.stale import endpoint_catalog, explain_stale

OLD_DB = IPv4Network("10.101.2.99/32")


def test_digests_round_trip_through_json() -> None:
    for state in observed().values():
        d = NodeDigests.of(state)
        assert NodeDigests.from_json(json.loads(json.dumps(d.to_json()))) == d
        assert moved(d, NodeDigests.of(state)) == []


def test_digests_are_the_sha256_of_each_canonical_part() -> None:
    import hashlib

    state = observed()["node-2"]
    parts = state.canonical_parts()
    d = NodeDigests.of(state)
    assert d.components["ipcache"].sha == hashlib.sha256(parts["ipcache"].encode()).hexdigest()[:16]
    canonical = state.canonical()
    assert json.loads(parts["ipcache"]) == canonical["ipcache"]
    assert json.loads(parts["endpoints"]) == canonical["endpoints"]


def test_stale_plan_names_components_and_the_exact_entries(tmp_path: Path) -> None:
    plan = read_plan(write_plan(make_plan(), tmp_path / "p.json"))  # from the file: no targets
    then = observed()["node-2"]
    ipcache = FrozenMap({p: e for p, e in then.ipcache.items() if p != OLD_DB})
    api_map = FrozenMap({PolicyKey(Direction.INGRESS, 256, PROTO_TCP, 80, 16): PolicyEntry(7)})
    live = replace(then, ipcache=ipcache, policies=FrozenMap({**then.policies, 21: api_map}))
    lines = explain_stale(plan, {**observed(), "node-2": live}, {"node-2": then}, catalog())
    assert lines[0] == (
        "  node-2: ipcache changed (4 -> 3 entries), policy map of demo/api changed (0 -> 1 entries)"
    )
    assert "      + node-2 ipcache 10.101.2.99/32: missing on the node (deleted outside meshctl)" in lines
    assert any(line.startswith("      - node-2 policy demo/api ingress allow demo/frontend tcp/80: present")
               for line in lines)
    assert not any("node-1" in line for line in lines)  # node-1 did not move


def test_drift_entries_are_limited_to_what_moved_since_the_plan() -> None:
    plan = make_plan()
    then = observed()["node-2"]
    older_intent = replace(then, config=DatapathConfig(ct_timeout_tcp_s=1))  # drift from before
    api_only = FrozenMap({IPv4Address("10.101.2.20"): EndpointEntry(21, 257, True, False)})
    live = replace(then, endpoints=api_only)
    lines = explain_stale(plan, {"node-2": live}, {"node-2": older_intent}, catalog())
    assert lines[0] == "  node-2: endpoints changed (2 -> 1 entries)"
    assert not any("config" in line for line in lines)  # old drift, not what made the plan stale
    assert any("endpoint demo/api" in line for line in lines)


def test_names_come_from_the_state_endpoint_table() -> None:
    cat = endpoint_catalog({"node-2": {"next_id": 24, "endpoints": {"demo/api": 21}}})
    assert cat.endpoints["node-2"][21] == "demo/api"


def test_digests_stay_small_at_10000_pods() -> None:
    maps = [FrozenMap({PolicyKey(Direction.INGRESS, 256 + i, PROTO_TCP, 80, 16): PolicyEntry(i)})
            for i in range(300)]
    state = NodeState("n", policies=FrozenMap({ep: maps[ep % 300] for ep in range(1, 10_001)}))
    size = len(json.dumps(NodeDigests.of(state).to_json(), separators=(",", ":")))
    assert size < 80_000, size


def test_endpoint_ids_pack_as_ranges() -> None:
    for ids in ([], [5], [1, 2, 3, 7], [1, 3, 5, 6], list(range(1, 1001))):
        assert unpack_ids(pack_ids(ids)) == ids
    assert pack_ids([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"


def test_a_plan_of_an_older_fingerprint_kind_is_refused_as_stale(tmp_path: Path) -> None:
    import pytest

    from meshctl.errors import PlanStaleError
    from meshctl.plan.stale import check_fresh

    plan = read_plan(write_plan(make_plan(), tmp_path / "p.json"))
    now = {n.node: n.observed_fingerprint for n in plan.nodes}
    check_fresh(plan, now, None)  # this meshctl's plan of the same nodes: fresh
    old = replace(plan, format_version="2.4")  # its node fingerprints hashed the rows of every map
    with pytest.raises(PlanStaleError, match=r"older meshctl \(plan format 2.4\) .* make the plan again"):
        check_fresh(old, now, None)

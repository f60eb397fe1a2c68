"""State file: lineage on first write, serial per apply, tables kept opaque, atomic writes."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from meshctl.errors import StateError
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState
from meshctl.state import State, load_state, save_state


def test_missing_state_is_empty(tmp_path: Path) -> None:
    state = load_state(tmp_path)
    assert state.lineage is None and state.serial == 0 and state.nodes == {}


def test_round_trip_lineage_serial_tables_and_intent(tmp_path: Path) -> None:
    ns = NodeState("node-1", ipcache=FrozenMap({IPv4Network("10.0.0.1/32"): IpcacheEntry(256)}))
    first = save_state(tmp_path, State().with_tables({"next": 257, "ids": {"a": 256}}, {"node-1": {"x": 1}}))
    assert first.lineage is not None
    applied = first.record_apply("sha256:abc", {"node-1": ns})
    assert applied.serial == first.serial + 1
    written = save_state(tmp_path, applied)
    assert written.lineage == first.lineage  # lineage is kept across writes
    back = load_state(tmp_path)
    assert back == written
    assert back.nodes["node-1"].intended == ns
    assert back.nodes["node-1"].fingerprint == ns.fingerprint()
    assert back.identities == {"next": 257, "ids": {"a": 256}}
    assert back.last_plan_id == "sha256:abc"
    # no temp files left behind by the atomic write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_uninstalled_node_leaves_the_state(tmp_path: Path) -> None:
    applied = State().record_apply("sha256:p", {"node-1": NodeState("node-1"), "node-2": NodeState("node-2")})
    gone = save_state(tmp_path, applied.forget_node("node-2"))
    assert gone.serial == applied.serial + 1 and set(load_state(tmp_path).nodes) == {"node-1"}
    assert gone.last_plan_id == "sha256:p" and gone.forget_node("node-9").nodes == gone.nodes


def test_corrupt_state_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match=r"state.json: corrupt state file"):
        load_state(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(StateError, match="unsupported format_version 99"):
        load_state(tmp_path)


def _shared_intent() -> dict[str, NodeState]:
    """Two nodes whose three endpoints of one identity share one policy map object."""
    from meshctl.nodestate import PROTO_TCP, Direction, PolicyEntry, PolicyKey

    shared = FrozenMap({PolicyKey(Direction.INGRESS, 300 + i, PROTO_TCP, 80, 16): PolicyEntry(7)
                        for i in range(50)})
    other = FrozenMap({PolicyKey(Direction.EGRESS, 2): PolicyEntry(8, deny=True)})
    return {
        "node-1": NodeState("node-1", policies=FrozenMap({1: shared, 2: shared, 3: other})),
        "node-2": NodeState("node-2", policies=FrozenMap({1: shared})),
    }


def test_policy_maps_are_stored_once_and_decoded_only_when_read(tmp_path: Path) -> None:
    intent = _shared_intent()
    save_state(tmp_path, State().record_apply("sha256:p", intent))
    doc = json.loads((tmp_path / "state.json").read_text())
    assert doc["format_version"] == 2 and len(doc["policy_maps"]) == 2  # 4 endpoints, 2 distinct maps
    one, two = doc["nodes"]["node-1"]["policy_refs"], doc["nodes"]["node-2"]["policy_refs"]
    assert [d for _, d in one][:2] == [two[0][1]] * 2
    assert all(isinstance(t, str) for t in doc["policy_maps"].values())  # JSON texts: parsed only when read
    back = load_state(tmp_path)
    assert back.serial == 1 and all(r._intended is None for r in back.nodes.values())  # not decoded yet
    assert {n: r.intended for n, r in back.nodes.items()} == intent
    assert all(r.intended.fingerprint() == r.fingerprint for r in back.nodes.values())
    save_state(tmp_path, back)  # a state read and written again is the same file
    assert json.loads((tmp_path / "state.json").read_text()) == doc


def test_a_format_1_state_is_read_and_written_as_format_2(tmp_path: Path) -> None:
    intent = _shared_intent()
    v1 = {"format_version": 1, "lineage": "l-1", "serial": 3, "identities": {}, "endpoint_ids": {},
          "last_plan_id": "sha256:p", "last_applied_at": "2026-12-01T00:00:00+00:00",
          "rules": {}, "staged": {},
          "nodes": {n: {"fingerprint": ns.fingerprint(), "applied_at": "2026-12-01T00:00:00+00:00",
                        "intended": ns.canonical()} for n, ns in intent.items()}}
    (tmp_path / "state.json").write_text(json.dumps(v1, indent=2))
    back = load_state(tmp_path)
    assert back.serial == 3 and {n: r.intended for n, r in back.nodes.items()} == intent
    save_state(tmp_path, back)
    doc = json.loads((tmp_path / "state.json").read_text())
    assert doc["format_version"] == 2 and len(doc["policy_maps"]) == 2
    assert {n: r.intended for n, r in load_state(tmp_path).nodes.items()} == intent


def test_a_missing_policy_map_is_a_corrupt_state(tmp_path: Path) -> None:
    save_state(tmp_path, State().record_apply("sha256:p", _shared_intent()))
    doc = json.loads((tmp_path / "state.json").read_text())
    doc["policy_maps"].popitem()
    (tmp_path / "state.json").write_text(json.dumps(doc))
    with pytest.raises(StateError, match=r"corrupt state file: policy map \w+ is referenced but not stored"):
        load_state(tmp_path)

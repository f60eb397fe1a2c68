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


def test_corrupt_state_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match=r"state.json: corrupt state file"):
        load_state(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(StateError, match="unsupported format_version 99"):
        load_state(tmp_path)

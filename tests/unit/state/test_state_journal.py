"""Apply journal: durable records, open entries, torn last line ignored, cleared at the end."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from meshctl.errors import StateError
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState
from meshctl.state import Journal

A = NodeState("node-1")
B = NodeState("node-1", ipcache=FrozenMap({IPv4Network("10.0.0.0/24"): IpcacheEntry(256)}))


def test_open_entries_are_begun_but_not_finished(tmp_path: Path) -> None:
    j = Journal(tmp_path, "sha256:p1")
    j.begin("node-1", A, B)
    j.begin("node-2", NodeState("node-2"), NodeState("node-2"))
    j.begin("node-3", NodeState("node-3"), NodeState("node-3"))
    j.done("node-2")
    j.reverted("node-3")
    open_ = Journal(tmp_path).open_entries()
    assert list(open_) == ["node-1"]
    rec = open_["node-1"]
    assert rec.plan_id == "sha256:p1" and rec.before == A and rec.after == B
    j.clear()
    assert Journal(tmp_path).open_entries() == {}
    assert not (tmp_path / "journal.jsonl").exists()


def test_torn_last_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    j = Journal(tmp_path, "p")
    j.begin("node-1", A, B)
    with open(j.path, "ab") as f:  # crash in the middle of writing `done`
        f.write(b'{"after":null,"before":null,"node":"node-1","pha')
    assert list(j.open_entries()) == ["node-1"]  # the done never became durable
    j.begin("node-2", NodeState("node-2"), NodeState("node-2"))  # next append cuts the torn tail
    assert sorted(j.open_entries()) == ["node-1", "node-2"]
    assert j.path.read_bytes().count(b"\n") == 2


def test_corruption_in_the_middle_is_an_error(tmp_path: Path) -> None:
    j = Journal(tmp_path, "p")
    j.begin("node-1", A, B)
    with open(j.path, "ab") as f:
        f.write(b"garbage\n")
    j.done("node-1")
    with pytest.raises(StateError, match=r"journal.jsonl:2: corrupt journal record"):
        j.open_entries()

"""Pure parts of recover (which side each journalled node ends on) and stale-plan details."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

from meshctl.app.apply import stale_details
from meshctl.app.drift import DriftReport, describe, render_markdown, render_text
from meshctl.app.recover import last_records
from meshctl.catalog import Catalog
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState
from meshctl.plan import build_plan, diff_node
from meshctl.state import Journal


def state(node: str, *identities: int) -> NodeState:
    return NodeState(
        node, ipcache=FrozenMap({IPv4Network(f"10.0.{i}.0/24"): IpcacheEntry(i) for i in identities})
    )


def test_last_records_from_a_real_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path, "plan-1")
    j.begin("n1", state("n1"), state("n1", 1))
    j.done("n1")
    j.begin("n2", state("n2"), state("n2", 2))  # killed here: n2 may be half-applied
    j.begin("n3", state("n3"), state("n3", 3))
    j.reverted("n3")
    begins, last = last_records(j.records())
    assert last == {"n1": "done", "n2": "begin", "n3": "reverted"}
    assert begins["n2"].before == state("n2") and begins["n1"].after == state("n1", 1)
    assert set(j.open_entries()) == {"n2"}


def test_stale_details_name_what_moved() -> None:
    before, target = state("n1", 1, 2), state("n1", 1, 3)
    plan = build_plan({"n1": before}, {"n1": target}, Catalog(), impact=False)
    live = replace(before, ipcache=FrozenMap({IPv4Network("10.0.1.0/24"): IpcacheEntry(1)}))
    details = stale_details(plan, {"n1": live})
    assert details == ["  - n1 ipcache 10.0.2.0/24: went missing"]
    assert stale_details(plan, {"n1": before}) == []  # fresh node: nothing to say


def test_drift_report_words() -> None:
    intended, live = state("n1", 1, 2), state("n1", 1)
    changes = diff_node(live, intended)
    report = DriftReport("c", 3, "HEAD (commit 0123456789ab)", nodes={"n1": changes}, clean=["n2", "n3"],
                         never_applied=["n3"])
    assert describe(changes[0]) == {"drift": "missing on the node (deleted outside meshctl)"}
    text = render_text(report)
    assert text.startswith("Drift of cluster c against the desired state at HEAD (commit 0123456789ab)")
    assert "+ n1 ipcache 10.0.2.0/24: missing on the node (deleted outside meshctl)" in text
    assert "node n2: no drift" in text and "node n3: never applied" in text
    assert "| n1 | `n1 ipcache 10.0.2.0/24` |" in render_markdown(report)
    doc = report.to_json()
    assert doc["drift"] is True and doc["nodes"]["n1"][0]["change"]["actions"] == ["create"]
    assert "No drift: the datapath matches" in render_text(DriftReport("c", 3, clean=["n1"]))


def test_drift_tells_a_commit_not_applied_yet_from_a_change_by_hand() -> None:
    from meshctl.app.drift import _ahead

    applied, desired = state("n1", 1), state("n1", 1, 2)
    changes = diff_node(applied, desired)  # the node is as applied; HEAD added an entry
    ahead = _ahead(changes, applied, applied)
    report = DriftReport("c", 3, nodes={"n1": changes}, ahead={"n1": ahead})
    assert "+ n1 ipcache 10.0.2.0/24: in the desired state, not applied yet" in render_text(report)
    by_hand = state("n1")  # the entry the last apply left is gone too
    both = diff_node(by_hand, desired)
    words = sorted(DriftReport("c", 3, nodes={"n1": both}, ahead={"n1": _ahead(both, by_hand, applied)})
                   .words("n1", c) for c in both)
    assert words == ["in the desired state, not applied yet", "missing on the node (deleted outside meshctl)"]


def test_a_node_not_read_is_never_called_clean() -> None:
    report = DriftReport("c", 3, clean=["n1"], unread={"n2": "agent of node n2: connection refused"})
    text = render_text(report)
    assert "node n2: NOT CHECKED: agent of node n2: connection refused" in text
    assert "No drift: the datapath matches" not in text and "No drift on the 1 node(s) read." in text
    assert "**node n2 not checked**" in render_markdown(report)
    assert report.to_json()["not_checked"] == {"n2": "agent of node n2: connection refused"}

"""An apply session's hold on a node, on the agent's side: a lock taken before the node changes,
one session at a time, renewed or reverted by the node itself, and kept across an agent restart."""

from __future__ import annotations

import time
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from served_agents import ValueNode

from meshctl.agentapi.service import NodeService, Refused
from meshctl.nodestate import FrozenMap, IpcacheEntry, NodeState


def with_entry(ip: str) -> NodeState:
    return NodeState("n1", ipcache=FrozenMap({IPv4Network(f"{ip}/32"): IpcacheEntry(300, 0)}))


def apply(svc: NodeService, node: ValueNode, target: NodeState, session: str = "s1",
          lease: float = 30) -> dict:
    return svc.apply({"target": target.canonical(), "expected_fingerprint": node.state.fingerprint(),
                      "plan_id": "p", "session": {"id": session, "lease_s": lease}})


def test_held_while_away_one_session_at_a_time_released_at_the_end(tmp_path: Path) -> None:
    node = ValueNode("n1")
    svc = NodeService("n1", node, tmp_path)
    before = node.state
    assert apply(svc, node, with_entry("10.0.0.1"))["held"] and svc.applying()
    with pytest.raises(Refused, match="held by apply session s1"):
        apply(svc, node, with_entry("10.0.0.2"), session="s2")
    assert apply(svc, node, with_entry("10.0.0.3"))["held"]  # the same session moves on
    assert svc.session is not None and svc.session.before == before  # still the first before-state
    with pytest.raises(Refused, match="no longer holds"):
        svc.end_session({"id": "s2"})
    svc.renew({"id": "s1", "lease_s": 30})
    svc.end_session({"id": "s1"})
    assert not svc.applying() and not (tmp_path / "session.json").exists()
    assert node.state == with_entry("10.0.0.3")  # ending keeps the node where it is


def test_a_session_locks_the_node_before_changing_it_and_holds_it_until_it_ends(tmp_path: Path) -> None:
    node = ValueNode("n1")
    svc = NodeService("n1", node, tmp_path)
    before = node.state
    assert svc.open_session({"id": "s1", "lease_s": 30})["held"] and svc.applying()
    with pytest.raises(Refused, match=r"held by apply session s1 until .* \(another apply is running") as err:
        svc.open_session({"id": "s2", "lease_s": 30})
    assert err.value.status == 409 and err.value.extra == {"held": "s1"}
    svc.open_session({"id": "s1", "lease_s": 30})  # the holder may ask again
    apply(svc, node, with_entry("10.0.0.1"))
    assert apply(svc, node, before)["held"], "back at the before-state, still locked until the end"
    assert svc.session is not None and svc.session.before == before
    svc.end_session({"id": "s1"})
    assert svc.open_session({"id": "s2", "lease_s": 30})["held"]


def test_a_silent_lock_runs_out_and_leaves_the_node_as_it_was(tmp_path: Path) -> None:
    node = ValueNode("n1")
    node.state = with_entry("10.0.0.9")
    svc = NodeService("n1", node, tmp_path)
    svc.open_session({"id": "s1", "lease_s": 0.1})
    time.sleep(0.15)
    assert svc.expire() and not svc.applying() and node.state == with_entry("10.0.0.9")


def test_no_lock_while_an_interrupted_apply_is_journalled(tmp_path: Path) -> None:
    from meshctl.state import Journal

    Journal(tmp_path, "p").begin("n1", NodeState("n1"), with_entry("10.0.0.1"))
    with pytest.raises(Refused, match="interrupted") as err:
        NodeService("n1", ValueNode("n1"), tmp_path).open_session({"id": "s1", "lease_s": 30})
    assert err.value.status == 409


def test_a_silent_session_is_reverted_by_the_node_even_after_a_restart(tmp_path: Path) -> None:
    node = ValueNode("n1")
    before = node.state
    apply(NodeService("n1", node, tmp_path), node, with_entry("10.0.0.1"), lease=0.2)
    restarted = NodeService("n1", node, tmp_path)  # the agent restarted: the hold is on disk
    assert restarted.applying() and not restarted.expire()  # not yet
    time.sleep(0.25)
    assert restarted.expire() and node.state == before and not restarted.applying()
    with pytest.raises(Refused, match="no longer holds"):
        restarted.renew({"id": "s1", "lease_s": 1})


def test_a_bad_session_is_a_400(tmp_path: Path) -> None:
    node = ValueNode("n1")
    svc = NodeService("n1", node, tmp_path)
    for bad in ({"id": ""}, {"id": "x", "lease_s": 0}, {"id": "x", "lease_s": 99999}, "x"):
        with pytest.raises(Refused) as err:
            svc.apply({"target": node.state.canonical(), "expected_fingerprint": node.state.fingerprint(),
                       "session": bad})
        assert err.value.status == 400

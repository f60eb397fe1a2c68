"""The agent's endpoint sync: it follows the inventory under the intent the node holds, once per
change, never without an intent, never during an apply, and never heals a hand-made change."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from meshctl.agentapi.endpoints import EndpointSync, agent_dir, read_intent, synced_revision, write_intent
from meshctl.compile.intent import NodeIntent
from meshctl.compile.spec import spec_from_desired
from meshctl.lab import inventory
from meshctl.lab.inventory import StoredPod
from meshctl.nodestate import NodeState
from meshctl.source import load_desired

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


class Node:
    """A node's live state held in memory: what observe returns and reconcile sets."""

    def __init__(self, name: str) -> None:
        self.state = NodeState(name)
        self.observed = 0
        self.reconciled: list[NodeState] = []

    def observe(self, node: str) -> NodeState:
        self.observed += 1
        return self.state

    def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
        assert current == self.state, "reconcile must start from the live state"
        self.state = target
        self.reconciled.append(target)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHCTL_LAB_DIR", str(tmp_path / "lab"))

    def seed(store: inventory.Store) -> None:
        store.namespaces["demo"] = {}
        store.namespaces["kube-system"] = {}
        store.add_pod("demo/frontend", StoredPod("node-1", "10.101.1.2", {"app": "frontend", "tier": "web"}))
        store.add_pod("demo/api", StoredPod("node-2", "10.101.2.2", {"app": "api", "tier": "backend"},
                                            [["api", 3000, "TCP"]]))

    inventory.update("c", seed)
    return tmp_path / "state"


def intent() -> NodeIntent:
    spec = spec_from_desired(load_desired(EXAMPLES / "three-tier"))
    return NodeIntent.of(spec, "b", NodeState(""), plan_id="plan-1")


def test_nothing_without_an_intent_then_in_step_once_per_change(lab: Path) -> None:
    node = Node("node-2")
    directory = agent_dir(lab, "node-2")
    sync = EndpointSync("node-2", node, directory, lambda: inventory.load("c"))
    assert sync.sync() is None and node.observed == 0  # never applied: the node stays as it is
    write_intent(directory, intent())
    assert read_intent(directory) == intent()
    first = sync.sync()
    assert first is not None and first.changed and first.endpoints == 1 and first.revision == 1
    assert synced_revision(directory) == 1
    assert sync.sync() is None  # nothing changed since
    inventory.update("c", lambda s: s.add_pod("demo/api-2", StoredPod("node-2", "10.101.2.3",
                                                                      {"app": "api", "tier": "backend"})))
    second = sync.sync()
    assert second is not None and second.changed and second.endpoints == 2 and synced_revision(directory) == 2
    assert node.observed == 1  # between syncs of one intent the agent's last target is the live state
    api, api2 = (node.state.endpoints[a] for a in sorted(node.state.endpoints))
    assert api.identity == api2.identity and node.state.policies[api.endpoint_id] == \
        node.state.policies[api2.endpoint_id]


def test_a_new_intent_is_observed_first_and_a_hand_made_change_stays(lab: Path) -> None:
    node = Node("node-1")
    directory = agent_dir(lab, "node-1")
    write_intent(directory, intent())
    sync = EndpointSync("node-1", node, directory, lambda: inventory.load("c"))
    assert sync.sync() is not None
    node.state = NodeState("node-1")  # wiped by hand: drift, which the sync must not hide
    assert sync.sync() is None and node.state == NodeState("node-1")
    write_intent(directory, NodeIntent.from_json({**intent().to_json(), "plan_id": "plan-2"}))
    again = sync.sync()  # an apply handed a new intent: observe, then reconcile from the live state
    assert again is not None and again.changed and node.observed == 2


def test_an_apply_in_progress_holds_the_sync(lab: Path) -> None:
    node = Node("node-1")
    directory = agent_dir(lab, "node-1")
    write_intent(directory, intent())
    applying = threading.Event()
    applying.set()
    sync = EndpointSync("node-1", node, directory, lambda: inventory.load("c"), busy=applying.is_set)
    assert sync.sync() is None and not node.reconciled
    applying.clear()
    assert sync.sync() is not None and len(node.reconciled) == 1


def test_run_survives_a_failing_step(lab: Path) -> None:
    class Broken(Node):
        def reconcile(self, node: str, current: NodeState, target: NodeState) -> None:
            raise RuntimeError("map full")

    directory = agent_dir(lab, "node-1")
    write_intent(directory, intent())
    stop = threading.Event()
    sync = EndpointSync("node-1", Broken("node-1"), directory, lambda: inventory.load("c"), interval_s=0.01)
    thread = sync.start(stop)
    stop.wait(0.2)
    assert thread.is_alive() and synced_revision(directory) == -1
    stop.set()
    thread.join(2)
    assert not thread.is_alive()

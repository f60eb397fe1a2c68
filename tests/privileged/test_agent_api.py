"""The agent API drives one real lab node: observe, apply a plan's node target, refuse a stale
fingerprint, revert to the exact before-state, verify; then a full `meshctl apply` over agents.

The lab is examples/three-tier (cluster t-go2-api); every node gets a real `meshctl agent`
subprocess (stopped by pid) whose socket lives in a private /tmp dir.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_helpers import start_agent, stop_agent
from apply_helpers import connect, lab_of, map_dumps, meshctl, three_tier_copy

from meshctl.agentapi.client import AgentClient
from meshctl.agentapi.protocol import AgentApiError, StaleNodeError, WireCheck, socket_path
from meshctl.nodestate import NodeState

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = "t-go2-api"
NODES = ("node-1", "node-2", "node-3")


@dataclass
class Lab:
    repo: Path
    sockets: Path
    netns: dict[str, str]
    initial: dict[str, NodeState]  # right after `lab up`: programs attached, maps empty

    def client(self, node: str) -> AgentClient:
        return AgentClient(node, socket_path(CLUSTER, node, self.sockets), timeout_s=30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from meshctl.app.workspace import open_workspace

    repo = three_tier_copy(tmp_path_factory.mktemp("agentapi") / "repo", CLUSTER)
    sockets = Path(tempfile.mkdtemp(prefix="mc-go2-", dir="/tmp"))  # short: sun_path is 108 bytes
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with lab_of(repo):
            ws = open_workspace(repo)
            initial = ws.backend.observe_many(NODES)
            for node in NODES:
                procs.append(start_agent(repo, CLUSTER, node, sockets))
            yield Lab(repo, sockets, dict(ws.netns), initial)
            for proc in procs:
                stop_agent(proc)
            for node in NODES:  # a clean stop removes the socket
                assert not socket_path(CLUSTER, node, sockets).exists()
    finally:
        for proc in procs:
            stop_agent(proc)
        shutil.rmtree(sockets, ignore_errors=True)


def plan_targets(repo: Path) -> tuple[str, dict[str, NodeState]]:
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import open_workspace

    plan = make_plan(open_workspace(repo)).plan
    return plan.plan_id, {n.node: n.intended for n in plan.nodes}


def lab_reconcile(lab: Lab, node: str, target: NodeState) -> None:
    from meshctl.apply.driver import LabDriver

    driver = LabDriver(CLUSTER, lab.netns)
    driver.reconcile(node, driver.observe(node), target)


def test_socket_is_private(lab: Lab) -> None:
    mode = socket_path(CLUSTER, "node-2", lab.sockets).stat().st_mode & 0o777
    assert mode == 0o600


def test_observe_equals_observe_node(lab: Lab) -> None:
    from meshctl.observe import observe_node

    raw = lab.client("node-2").observe_raw()
    live = observe_node(CLUSTER, "node-2", lab.netns["node-2"])
    assert NodeState.from_canonical(raw["state"]) == live
    assert raw["fingerprint"] == live.fingerprint()
    assert raw["interrupted"] is False


def test_apply_stale_revert_verify_one_node(lab: Lab) -> None:
    client = lab.client("node-2")
    plan_id, targets = plan_targets(lab.repo)
    for node in ("node-1", "node-3"):  # the other ends of node-2's connections, applied locally
        lab_reconcile(lab, node, targets[node])
    # A fresh lab never wrote node-2's config map (all zeros; observed as the defaults): have the
    # lab driver write the before-state once, so the dumps below compare what a revert writes.
    lab_reconcile(lab, "node-2", targets["node-2"])
    lab_reconcile(lab, "node-2", lab.initial["node-2"])
    before = client.observe()
    assert before == lab.initial["node-2"]
    before_dumps = map_dumps(CLUSTER, "node-2")
    assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)  # node-2 enforces nothing yet

    # a stale fingerprint is refused with 409 and nothing changes
    with pytest.raises(StaleNodeError, match="changed since it was planned"):
        client.apply(targets["node-2"], "sha256:" + "0" * 64, plan_id)
    assert client.observe() == before

    # apply the plan's node-2 target: the connection changes for real
    answer = client.apply(targets["node-2"], before.fingerprint(), plan_id)
    assert answer["ok"] and answer["changed"]
    assert answer["before_fingerprint"] == before.fingerprint()
    assert client.observe() == targets["node-2"]
    assert answer["fingerprint"] == targets["node-2"].fingerprint()
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    journal = lab.repo / "state" / "agents" / "node-2" / "journal.jsonl"
    assert not journal.exists(), "a finished apply leaves no node journal behind"

    # the plan's before-fingerprint is now stale: a second apply from it is refused
    with pytest.raises(StaleNodeError):
        client.apply(targets["node-2"], before.fingerprint(), plan_id)

    # verify: drop gate + checks from node-2's pods, as real connections
    from meshctl.lab import registry

    db = str(registry.pod(CLUSTER, "demo/database").address)
    fe = str(registry.pod(CLUSTER, "demo/frontend").address)
    result = client.verify([
        WireCheck("api-to-database", "demo/api", db, 5432, "TCP", "allowed"),
        WireCheck("api-to-frontend", "demo/api", fe, 80, "TCP", "denied"),
    ], window_s=0.1, threshold_per_s=1000)
    assert result["ok"], result
    assert [c["observed"] for c in result["checks"]] == ["allowed", "denied"]
    assert result["gate"]["ok"] and result["gate"]["window_s"] == 0.1
    wrong = client.verify([WireCheck("expects-wrong", "demo/api", fe, 80, "TCP", "allowed")])
    assert not wrong["ok"] and wrong["checks"][0]["observed"] == "denied"
    with pytest.raises(AgentApiError, match="must start at a pod of node node-2"):
        client.verify([WireCheck("foreign", "demo/frontend", db, 5432, "TCP", "denied")])

    # revert to the before-state: the kernel's maps equal what they were
    client.revert(before)
    assert client.observe() == before
    assert map_dumps(CLUSTER, "node-2") == before_dumps
    assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)


def test_bad_requests_are_clear_errors(lab: Lab) -> None:
    client = lab.client("node-2")
    with pytest.raises(AgentApiError, match="a state of node 'node-1'"):
        client.apply(NodeState("node-1"), "sha256:x")
    with pytest.raises(AgentApiError, match="no GET /v1/nothing"):
        client._call("GET", "/v1/nothing")
    with pytest.raises(AgentApiError, match="no agent socket"):
        AgentClient("node-9", lab.sockets / "missing.sock").observe()


def test_full_apply_with_agent_driver(lab: Lab) -> None:
    for node in NODES:  # back to the lab's fresh state, so every node has work
        lab_reconcile(lab, node, lab.initial[node])
    toml = lab.repo / "meshctl.toml"
    toml.write_text(toml.read_text() + f'\n[apply]\ndriver = "agent"\nsocketDir = "{lab.sockets}"\n'
                    '[inventory]\nsource = "lab"\n')
    res = meshctl(lab.repo, "apply", "--auto-approve", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete: 3 node(s) updated, 3 verified by " in res.stdout
    assert "check frontend-to-database-denied" in res.stderr
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    assert connect(CLUSTER, "demo/api", "demo/database", 5432)
    assert not connect(CLUSTER, "demo/frontend", "demo/database", 5432)
    res = meshctl(lab.repo, "plan", "--detailed-exitcode")
    assert res.returncode == 0, res.stdout + res.stderr

    # with every agent gone, the agent driver says which socket is missing (no traceback)
    lab_reconcile(lab, "node-1", lab.initial["node-1"])
    dead = lab.repo.parent / "dead"
    dead.mkdir()
    toml.write_text(toml.read_text().replace(str(lab.sockets), str(dead)))
    res = meshctl(lab.repo, "apply", "--auto-approve", timeout=60)
    assert res.returncode == 1
    assert "no agent socket" in res.stderr and "Traceback" not in res.stderr
    toml.write_text(toml.read_text().replace(str(dead), str(lab.sockets)))

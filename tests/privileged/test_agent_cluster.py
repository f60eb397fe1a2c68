"""The GitOps loop without the lab: plan, apply, drift, recover and status through node agents.

A lab (examples/three-tier, cluster t-ag2-<pid>) stands in for a real cluster's nodes, each with
its own `meshctl agent` subprocess (stopped by pid; sockets in a private /tmp dir). The CLI then
runs from a SECOND copy of the repo that says `[apply] driver = "agent"` and carries the pods'
IPs in status.podIP, with the lab registry made invisible (MESHCTL_LAB_DIR points at an empty
dir): whatever it learns about the nodes, it learns from the agents.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from agent_helpers import agent_driven_repo, start_agent, stop_agent
from apply_helpers import connect, lab_of, meshctl, three_tier_copy, unique_cluster

from meshctl.agentapi.client import AgentClient
from meshctl.agentapi.protocol import socket_path

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ag2")
NODES = ("node-1", "node-2", "node-3")


@dataclass
class Cluster:
    lab_repo: Path  # the repo the lab (and the agents) were started from
    repo: Path  # the cluster repo: driver = "agent", podIPs written in, no lab visible
    sockets: Path
    no_lab: dict[str, str]  # env that hides the lab registry from meshctl
    pod_ips: dict[str, IPv4Address]
    agents: dict[str, subprocess.Popen[bytes]]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return meshctl(self.repo, *args, env=self.no_lab, timeout=timeout)

    def client(self, node: str) -> AgentClient:
        return AgentClient(node, socket_path(CLUSTER, node, self.sockets), timeout_s=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from meshctl.lab import registry

    base = tmp_path_factory.mktemp("agentcluster")
    lab_repo = three_tier_copy(base / "lab-repo", CLUSTER)
    sockets = Path(tempfile.mkdtemp(prefix="mc-ag2-", dir="/tmp"))  # short: sun_path is 108 bytes
    hidden = base / "no-lab"
    hidden.mkdir()
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with lab_of(lab_repo):
            pod_ips = registry.pod_ips(CLUSTER)
            for node in NODES:
                agents[node] = start_agent(lab_repo, CLUSTER, node, sockets)
            repo = agent_driven_repo(base / "cluster-repo", CLUSTER, pod_ips, sockets)
            yield Cluster(lab_repo, repo, sockets, {"MESHCTL_LAB_DIR": str(hidden)}, pod_ips, agents)
            for proc in agents.values():
                stop_agent(proc)
    finally:
        for proc in agents.values():
            stop_agent(proc)
        shutil.rmtree(sockets, ignore_errors=True)


def test_workspace_comes_from_the_inventory_not_the_lab(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshctl.app.workspace import open_workspace
    from meshctl.errors import LabError

    monkeypatch.setenv("MESHCTL_LAB_DIR", cluster.no_lab["MESHCTL_LAB_DIR"])
    ws = open_workspace(cluster.repo)
    assert ws.netns == {} and ws.backend.kind == "agent"
    assert ws.backend.nodes == frozenset(NODES)
    assert ws.pod_ips() == cluster.pod_ips
    # the same live state through the agents as through the kernel (the lab sees the same maps)
    observed = ws.backend.observe_many(NODES)
    assert {n: s.node for n, s in observed.items()} == {n: n for n in NODES}
    assert observed["node-2"] == cluster.client("node-2").observe()
    # the lab driver (the default) still needs the lab, and says so
    with pytest.raises(LabError, match="no lab named"):
        open_workspace(cluster.lab_repo)


def test_plan_lists_the_adds_and_changes_nothing(cluster: Cluster) -> None:
    res = cluster.cli("plan", "--detailed-exitcode", "-o", "json")
    assert res.returncode == 2, res.stdout + res.stderr
    plan = json.loads(res.stdout)
    nodes = {n["node"]: n for n in plan["nodes"]}
    assert set(nodes) == set(NODES)
    changes = [c for n in nodes.values() for c in n["resource_changes"]]
    assert {tuple(c["change"]["actions"]) for c in changes} == {("create",)}, changes
    addresses = {c["address"] for c in changes}
    api_ip, fe_ip = cluster.pod_ips["demo/api"], cluster.pod_ips["demo/frontend"]
    assert "node-2 endpoint demo/api" in addresses, sorted(addresses)
    assert f"node-1 ipcache {api_ip}/32" in addresses and f"node-2 ipcache {fe_ip}/32" in addresses
    assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)  # a plan touches nothing


def test_apply_through_the_agents_changes_real_connections(cluster: Cluster) -> None:
    res = cluster.cli("apply", "--auto-approve")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete: 3 node(s) updated, 3 verified by " in res.stdout
    # checks ran via the agents' verify, and "denied" was the drop node-1's agent stored for it
    assert ("check frontend-to-database-denied: demo/frontend -> demo/database:5432/TCP expected denied, "
            "observed denied: ok (timed out; default deny drop on node-1 (flow store))") in res.stderr
    assert "could not be subtracted" not in res.stderr  # the gate read each agent's flow store
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    assert connect(CLUSTER, "demo/api", "demo/database", 5432)
    assert not connect(CLUSTER, "demo/frontend", "demo/database", 5432)
    res = cluster.cli("plan", "--detailed-exitcode")
    assert res.returncode == 0, res.stdout + res.stderr
    res = cluster.cli("drift", "--detailed-exitcode")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No drift" in res.stdout


def test_agent_probes_are_judged_with_the_drops_every_crossed_agent_recorded(cluster: Cluster) -> None:
    """The source node's agent connects; the agents of both ends are asked for their drops of it."""
    from meshctl.agentapi.driver import AgentCheckRunner, AgentDriver
    from meshctl.apply.probes import Probe

    driver = AgentDriver(CLUSTER, NODES, cluster.sockets)
    pod_nodes = {"demo/frontend": "node-1", "demo/api": "node-2", "demo/database": "node-3"}
    run = AgentCheckRunner(driver, pod_nodes, cluster.pod_ips)
    to_db = Probe("p", "demo/frontend", "demo/database", 5432, "TCP", "denied", "probe", ("node-1", "node-3"))
    denied = run(to_db)
    assert denied.ok and denied.attempt is not None and not denied.attempt.connected, denied.describe()
    assert [(d.node, d.reason, d.source) for d in denied.drops] == [("node-1", 2, "flows")]
    wrong = run(Probe("p", "demo/frontend", "demo/api", 3000, "TCP", "denied", "probe", ("node-1", "node-2")))
    assert not wrong.ok and wrong.observed == "allowed"
    ghost = run(Probe("p", "demo/frontend", "demo/ghost", 80, "TCP", "denied"))
    assert ghost.observed == "error" and "demo/ghost does not exist" in ghost.describe()


def _delete_ipcache(node: str, ip: IPv4Address) -> None:
    key = ["20", "00", "00", "00", *(f"{b:02x}" for b in ip.packed)]  # prefixlen 32 (LE), addr (BE)
    subprocess.run(["bpftool", "map", "delete", "pinned", f"/sys/fs/bpf/meshctl/{CLUSTER}/{node}/ipcache",
                    "key", "hex", *key], check=True)


def test_hand_change_is_drift_and_heal_goes_through_the_agents(cluster: Cluster) -> None:
    api_ip = cluster.pod_ips["demo/api"]
    _delete_ipcache("node-1", api_ip)
    assert not connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    res = cluster.cli("drift", "--detailed-exitcode")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"node-1 ipcache {api_ip}/32: missing on the node (deleted outside meshctl)" in res.stdout
    assert "node node-2: no drift" in res.stdout
    res = cluster.cli("drift", "--heal")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete: 1 node(s) updated, 1 verified by " in res.stdout
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)
    assert cluster.cli("drift", "--detailed-exitcode").returncode == 0


def test_recover_reverts_through_the_agent(cluster: Cluster) -> None:
    from meshctl.state import Journal

    client = cluster.client("node-2")
    before = client.observe()
    # an apply that died after journalling node-2 and touching it: its ipcache lost an entry
    Journal(cluster.repo / "state", "sha256:interrupted").begin("node-2", before, before)
    _delete_ipcache("node-2", cluster.pod_ips["demo/frontend"])
    assert client.observe() != before
    res = cluster.cli("plan")
    assert res.returncode == 1 and "meshctl recover" in res.stderr
    res = cluster.cli("recover")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Reverted to the before-state: node-2." in res.stdout
    assert client.observe() == before
    assert cluster.cli("plan", "--detailed-exitcode").returncode == 0


def test_status_shows_the_nodes_via_their_agents(cluster: Cluster) -> None:
    res = cluster.cli("status", "-o", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and doc["last_plan_id"]
    nodes = {n["name"]: n for n in doc["nodes"]}
    for node in NODES:
        st = nodes[node]
        assert st["agent"] == f"up (unix:{socket_path(CLUSTER, node, cluster.sockets)})"
        assert st["loaded_build"] and st["attachments"] >= 2 and st["endpoints"] >= 1
        assert st["drift"] == "no" and st["error"] == ""
    text = cluster.cli("status")
    assert text.returncode == 0 and "Flow agents:    3/3 up" in text.stdout

    stop_agent(cluster.agents["node-3"])  # last test of the module: the fixture stops the rest
    res = cluster.cli("status", "-o", "json")
    assert res.returncode == 1
    node3 = next(n for n in json.loads(res.stdout)["nodes"] if n["name"] == "node-3")
    assert node3["agent"] == "down" and "no agent socket" in node3["error"]
    res = cluster.cli("plan")
    assert res.returncode == 1 and "no agent socket" in res.stderr and "Traceback" not in res.stderr

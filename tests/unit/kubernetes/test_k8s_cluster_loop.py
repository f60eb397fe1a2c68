"""The cluster loop with the Kubernetes inventory, over real HTTP and the real agent API.

Nodes are values (no kernel: the lab tests cover the datapath); everything between them is real.
Each node's agent follows a local API server (list and watch, CiliumIdentity objects, its own
endpoint ids). The CLI plans with the agents' numbers, applies through the agents and hands every
node the intent it follows pods under. A pod that starts afterwards gets its endpoint on its own
node and its ipcache entry on the other without a plan, and the next plan has nothing to do.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "agentapi"))
from kube_api_server import KubeApiServer
from served_agents import ValueNode

from meshctl.agentapi.kubeinventory import kube_endpoint_sync
from meshctl.agentapi.protocol import socket_path
from meshctl.agentapi.server import serve
from meshctl.agentapi.service import NodeService
from meshctl.source.config import parse_config

CLUSTER = "t-kloop"
NODES = ("node-a", "node-b")
TOML = """[cluster]
name = "t-kloop"
[[nodes]]
name = "node-a"
podCIDR = "10.1.0.0/24"
[[nodes]]
name = "node-b"
podCIDR = "10.1.1.0/24"
[apply]
driver = "agent"
socketDir = "{sockets}"
lease = 10
[rollout]
verifyWindow = 0
[inventory]
source = "kubernetes"
kubeconfig = "kubeconfig"
"""
POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db-from-web, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: web}}]
      toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
"""


def pod(name: str, node: str, ip: str, app: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "prod", "name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 5432}]}]},
            "status": {"phase": "Running", "podIP": ip}}


@dataclass
class Cluster:
    repo: Path
    server: KubeApiServer
    nodes: dict[str, ValueNode]
    agents: dict[str, NodeService]


def wait_for(what: str, ok: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    (tmp_path / "no-lab").mkdir()
    monkeypatch.setenv("MESHCTL_LAB_DIR", str(tmp_path / "no-lab"))
    repo, sockets = tmp_path / "repo", tmp_path / "sockets"
    repo.mkdir()
    sockets.mkdir()
    (repo / "meshctl.toml").write_text(TOML.format(sockets=sockets))
    (repo / "policy.yaml").write_text(POLICY)
    objects = {"namespaces": [{"metadata": {"name": "prod"}}], "services": [], "nodes": [],
               "pods": [pod("web", "node-a", "10.1.0.20", "web"), pod("db", "node-b", "10.1.1.30", "db")]}
    stop = threading.Event()
    with KubeApiServer(objects) as server:
        (repo / "kubeconfig").write_text(server.kubeconfig())
        section = parse_config((repo / "meshctl.toml").read_text(), repo).inventory
        nodes, agents, threads = {}, {}, []
        for name in NODES:
            nodes[name] = ValueNode(name)
            agents[name] = NodeService(name, nodes[name], sockets / f"journal-{name}")
            ready = threading.Event()
            where = socket_path(CLUSTER, name, sockets)
            threads.append(threading.Thread(target=serve, args=(agents[name], where, stop),
                                            kwargs={"ready": ready}, daemon=True))
            threads[-1].start()
            assert ready.wait(10)
            kube_endpoint_sync(agents[name], CLUSTER, section, repo, stop)
        try:
            yield Cluster(repo, server, nodes, agents)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)


def endpoint_ids(agent: NodeService) -> dict[str, int]:
    table = agent.endpoint_table()["endpoint_ids"] or {}
    return dict(table.get(agent.node, {}).get("endpoints", {}))


def test_pods_come_and_go_under_the_applied_intent_without_a_plan(cluster: Cluster) -> None:
    from meshctl.app.apply import apply_plan
    from meshctl.app.plan import make_plan
    from meshctl.app.workspace import open_workspace

    wait_for("the agents' endpoint ids", lambda: endpoint_ids(cluster.agents["node-a"]) == {"prod/web": 1}
             and endpoint_ids(cluster.agents["node-b"]) == {"prod/db": 1})
    numbers = {i["metadata"]["name"] for i in cluster.server.identities.values()}
    assert len(numbers) == 2, "one CiliumIdentity per label set, made by the agents"

    ws = open_workspace(cluster.repo)
    plan = make_plan(ws).plan
    assert plan.has_changes and plan.intent is not None
    outcome = apply_plan(ws, plan, checks=False)
    assert outcome.result.ok, outcome.result.summary()
    web = cluster.nodes["node-a"].state.endpoints[IPv4Address("10.1.0.20")]
    assert str(web.identity) in numbers, "the plan compiled the agents' identity numbers"

    cluster.server.put("pods", pod("web-2", "node-b", "10.1.1.31", "web"))  # a new pod, no plan
    wait_for("web-2's endpoint on node-b and its ipcache entry on node-a", lambda: (
        IPv4Address("10.1.1.31") in cluster.nodes["node-b"].state.endpoints
        and IPv4Network("10.1.1.31/32") in cluster.nodes["node-a"].state.ipcache))
    added = cluster.nodes["node-b"].state.endpoints[IPv4Address("10.1.1.31")]
    assert added.identity == web.identity, "an existing label set: the same identity everywhere"

    again = make_plan(open_workspace(cluster.repo)).plan
    assert not again.has_changes, [c.address for n in again.nodes for c in n.changes]
    assert any("not logged by this inventory" in w.summary for w in again.warnings)

    cluster.server.delete("pods", "prod/web-2")
    wait_for("web-2 gone from both nodes", lambda: (
        IPv4Address("10.1.1.31") not in cluster.nodes["node-b"].state.endpoints
        and IPv4Network("10.1.1.31/32") not in cluster.nodes["node-a"].state.ipcache))

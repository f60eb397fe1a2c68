"""open_workspace chooses the backend once: with `[apply] driver = "agent"` nodes from
meshctl.toml, pod IPs from the inventory (the repo's status.podIP, or a Kubernetes API server),
no lab needed; the lab driver (the default) still needs its lab. No kernel: nothing here
observes a node."""

from __future__ import annotations

import logging
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "kubernetes"))
sys.path.insert(0, str(Path(__file__).parent / "agentapi"))
from kube_api_server import KubeApiServer
from served_agents import served_agents

from meshctl.app.workspace import open_workspace
from meshctl.backend.agents import AgentBackend
from meshctl.errors import LabError

CONFIG = """[cluster]
name = "t-ag2-unit"
[[nodes]]
name = "node-a"
podCIDR = "10.1.0.0/24"
[[nodes]]
name = "node-b"
podCIDR = "10.1.1.0/24"
"""
AGENT = '[apply]\ndriver = "agent"\nsocketDir = "/tmp/mc-ag2-unit"\n'
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n"


def _pod(name: str, node: str, ip: str | None) -> str:
    status = f"status:\n  podIP: {ip}\n" if ip else ""
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: prod\n"
            f"  labels: {{app: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c}}]\n{status}")


@pytest.fixture(autouse=True)
def no_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No lab registry is visible (an empty MESHCTL_LAB_DIR)."""
    (tmp_path / "no-lab").mkdir()
    monkeypatch.setenv("MESHCTL_LAB_DIR", str(tmp_path / "no-lab"))


def _repo(tmp_path: Path, toml: str, pods: list[str]) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "meshctl.toml").write_text(toml)
    (repo / "inventory.yaml").write_text("---\n".join([NAMESPACE, *pods]))
    return repo


def test_agent_driver_takes_pod_ips_from_the_repo(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = _repo(tmp_path, CONFIG + AGENT, [_pod("web", "node-a", "10.1.0.7"), _pod("db", "node-b", None)])
    with caplog.at_level(logging.WARNING, logger="meshctl.backend.agents"):
        ws = open_workspace(repo)
    assert ws.netns == {}
    access = ws.backend
    assert isinstance(access, AgentBackend)
    assert access.nodes == frozenset({"node-a", "node-b"})
    assert access.endpoint("node-b") == Path("/tmp/mc-ag2-unit/agent-t-ag2-unit-node-b.sock")
    assert ws.pod_ips() == {"prod/web": IPv4Address("10.1.0.7")}
    assert "1 pod(s) without an IP get no endpoint: prod/db" in caplog.text


def test_lab_driver_still_needs_the_lab(tmp_path: Path) -> None:
    repo = _repo(tmp_path, CONFIG, [_pod("web", "node-a", "10.1.0.7")])
    with pytest.raises(LabError, match="no lab named 't-ag2-unit' is up"):
        open_workspace(repo)


def test_inventory_source_lab_without_a_lab_is_one_clear_error(tmp_path: Path) -> None:
    repo = _repo(tmp_path, CONFIG + AGENT + '[inventory]\nsource = "lab"\n', [])
    with pytest.raises(LabError, match='source = "lab" but no lab named'):
        open_workspace(repo)


def test_agent_driver_with_the_kubernetes_inventory(tmp_path: Path) -> None:
    """Pods from the API server, with the numbers the node agents gave them: identities from the
    CiliumIdentity objects, endpoint ids from each node's agent (GET /v1/endpoints). A pod whose
    labels have no identity yet, or that its agent has not made an endpoint yet, waits."""
    from meshctl.compile.identities import IdentityTable
    from meshctl.compile.labels import identity_label_sets
    from meshctl.state import State
    from meshctl.state.tables import compile_desired

    def pod(name: str, node: str, ip: str | None, phase: str = "Running", app: str = "") -> dict[str, Any]:
        return {"metadata": {"namespace": "prod", "name": name, "labels": {"app": app or name}},
                "spec": {"nodeName": node, "containers": [{"name": "c"}]},
                "status": {"phase": phase, **({"podIP": ip} if ip else {})}}

    namespace_labels = {"team": "shop", "kubernetes.io/metadata.name": "prod"}
    web_set, db_set = identity_label_sets([("prod", {"app": "web"}), ("prod", {"app": "db"})],
                                          lambda ns: namespace_labels, "t-ag2-unit")
    objects = {
        "namespaces": [{"metadata": {"name": "prod", "labels": {"team": "shop"}}}],
        "pods": [pod("web", "node-a", "10.1.0.20"), pod("db", "node-b", "10.1.1.30"),
                 pod("old", "node-a", "10.1.0.99", phase="Succeeded"),
                 pod("web-2", "node-a", "10.1.0.21", app="web"),  # node-a's agent has not seen it yet
                 pod("new", "node-b", "10.1.1.31")],  # a label set no agent allocated yet
        "services": [], "nodes": [],
    }
    tables = {"node-a": {"node-a": {"next_id": 8, "endpoints": {"prod/web": 7}}},
              "node-b": {"node-b": {"next_id": 3, "endpoints": {"prod/db": 2}}}}
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    agent = f'[apply]\ndriver = "agent"\nsocketDir = "{sockets}"\n'
    with KubeApiServer(objects) as srv, served_agents("t-ag2-unit", sockets, tables):
        for number, labels in ((300, web_set), (301, db_set)):
            srv.identities[str(number)] = {"metadata": {"name": str(number)},
                                           "security-labels": dict(x.split("=", 1) for x in labels)}
        toml = CONFIG + agent + '[inventory]\nsource = "kubernetes"\nkubeconfig = "kubeconfig"\n'
        repo = _repo(tmp_path, toml, [_pod("repo-only", "node-a", "10.1.0.5")])
        (repo / "kubeconfig").write_text(srv.kubeconfig())
        ws = open_workspace(repo)
    assert ws.pod_ips() == {"prod/db": IPv4Address("10.1.1.30"), "prod/web": IPv4Address("10.1.0.20")}
    assert ws.pod_nodes() == {"prod/db": "node-b", "prod/web": "node-a"}
    assert [ns.labels for ns in ws.desired.namespaces] == [{"team": "shop"}]
    runtime = ws.backend.runtime
    assert runtime is not None and runtime.endpoint_ids == {n: t[n] for n, t in tables.items()}
    assert IdentityTable.from_dict(runtime.identities).by_labels == {web_set: 300, db_set: 301}
    compiled = compile_desired(ws.desired, State(), "build", runtime)  # what a plan compiles
    web = compiled.nodes["node-a"].endpoints[IPv4Address("10.1.0.20")]
    db = compiled.nodes["node-b"].endpoints[IPv4Address("10.1.1.30")]
    assert (web.endpoint_id, web.identity, db.endpoint_id, db.identity) == (7, 300, 2, 301)


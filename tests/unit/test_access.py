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
from kube_api_server import KubeApiServer

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
    def pod(name: str, node: str, ip: str | None, phase: str = "Running") -> dict[str, Any]:
        return {"metadata": {"namespace": "prod", "name": name, "labels": {"app": name}},
                "spec": {"nodeName": node, "containers": [{"name": "c"}]},
                "status": {"phase": phase, **({"podIP": ip} if ip else {})}}

    objects = {
        "namespaces": [{"metadata": {"name": "prod", "labels": {"team": "shop"}}}],
        "pods": [pod("web", "node-a", "10.1.0.20"), pod("db", "node-b", "10.1.1.30"),
                 pod("old", "node-a", "10.1.0.99", phase="Succeeded")],
        "services": [], "nodes": [],
    }
    with KubeApiServer(objects) as srv:
        toml = CONFIG + AGENT + '[inventory]\nsource = "kubernetes"\nkubeconfig = "kubeconfig"\n'
        repo = _repo(tmp_path, toml, [_pod("repo-only", "node-a", "10.1.0.5")])
        (repo / "kubeconfig").write_text(srv.kubeconfig())
        ws = open_workspace(repo)
    assert ws.pod_ips() == {"prod/db": IPv4Address("10.1.1.30"), "prod/web": IPv4Address("10.1.0.20")}
    assert ws.pod_nodes() == {"prod/db": "node-b", "prod/web": "node-a"}
    assert [ns.labels for ns in ws.desired.namespaces] == [{"team": "shop"}]

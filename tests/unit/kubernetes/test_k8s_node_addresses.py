"""Node underlay addresses from the Kubernetes inventory (Node status.addresses InternalIP), and
`meshctl encryption` under `[apply] driver = "agent"` without agents: one clear line."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "agentapi"))
from kube_api_server import KubeApiServer
from served_agents import served_agents

from meshctl.app.workspace import open_workspace

MESHCTL = Path(sys.executable).with_name("meshctl")
CONFIG = """[cluster]
name = "t-ad-k8s"
[[nodes]]
name = "node-a"
podCIDR = "10.1.0.0/24"
address = "192.0.2.1"
[[nodes]]
name = "node-b"
podCIDR = "10.1.1.0/24"
[[nodes]]
name = "node-c"
podCIDR = "10.1.2.0/24"
[apply]
driver = "agent"
socketDir = "{sockets}"
"""
NODES = ("node-a", "node-b", "node-c")
KUBE = '[inventory]\nsource = "kubernetes"\nkubeconfig = "kubeconfig"\n'


def _node(name: str, *addresses: tuple[str, str]) -> dict[str, Any]:
    listed = [{"type": t, "address": a} for t, a in addresses]
    return {"metadata": {"name": name}, "status": {"addresses": listed}}


OBJECTS = {
    "namespaces": [{"metadata": {"name": "prod"}}],
    "pods": [], "services": [],
    "nodes": [
        _node("node-a", ("InternalIP", "198.51.100.1")),  # meshctl.toml says 192.0.2.1: the file wins
        _node("node-b", ("Hostname", "node-b"), ("InternalIP", "fd00::2"), ("InternalIP", "198.51.100.2")),
        _node("node-c", ("ExternalIP", "203.0.113.3")),  # no InternalIP: stays without an address
        _node("elsewhere", ("InternalIP", "198.51.100.9")),  # not a node of meshctl.toml
    ],
}


@pytest.fixture(autouse=True)
def no_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "no-lab").mkdir()
    monkeypatch.setenv("MESHCTL_LAB_DIR", str(tmp_path / "no-lab"))


def _repo(tmp_path: Path, toml: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "meshctl.toml").write_text(toml)
    (repo / "inventory.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n")
    return repo


def test_internal_ips_fill_the_nodes_without_an_address(tmp_path: Path) -> None:
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    with KubeApiServer(OBJECTS) as srv, served_agents("t-ad-k8s", sockets, dict.fromkeys(NODES)):
        repo = _repo(tmp_path, CONFIG.format(sockets=sockets) + KUBE)
        (repo / "kubeconfig").write_text(srv.kubeconfig())
        ws = open_workspace(repo)
    assert [(n.name, n.address) for n in ws.config.nodes] == [
        ("node-a", IPv4Address("192.0.2.1")), ("node-b", IPv4Address("198.51.100.2")), ("node-c", None)]


def test_repo_inventory_leaves_the_addresses_alone(tmp_path: Path) -> None:
    ws = open_workspace(_repo(tmp_path, CONFIG.format(sockets=tmp_path / "sockets")))
    assert [n.address for n in ws.config.nodes] == [IPv4Address("192.0.2.1"), None, None]


def test_encryption_commands_without_agents_are_one_clear_line(tmp_path: Path) -> None:
    """No lab, no agents: status and rotate name the missing agent socket (not a netns KeyError)."""
    sockets = tmp_path / "sockets"
    repo = _repo(tmp_path, CONFIG.format(sockets=sockets))
    env = {"MESHCTL_LAB_DIR": str(tmp_path / "no-lab"), "PATH": "/usr/bin:/bin"}
    for args in (["status"], ["rotate", "--node", "node-b"]):
        res = subprocess.run([str(MESHCTL), "encryption", *args, "-C", str(repo)], capture_output=True,
                             text=True, timeout=60, env=env)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "agent of node node-" in res.stderr and f"no agent socket at {sockets}" in res.stderr

"""Transparent encryption without the lab: WireGuard steps applied through node agents.

A lab (examples/three-tier, cluster t-ad-<pid>) stands in for a real cluster's nodes, each with
its own `meshctl agent` subprocess (stopped by pid; sockets in a private /tmp dir). The CLI runs
from a second copy of the repo with `[apply] driver = "agent"`, the pods' IPs in status.podIP,
and the lab registry hidden (MESHCTL_LAB_DIR points at an empty dir). So the node addresses
can only come from `address` under [[nodes]], and every WireGuard reconcile runs in an agent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_helpers import agent_driven_repo, start_agent, stop_agent
from apply_helpers import connect, lab_of, meshctl, three_tier_copy, unique_cluster

from meshctl.agentapi.client import AgentClient
from meshctl.agentapi.protocol import socket_path

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-ad")
NODES = ("node-1", "node-2", "node-3")


@dataclass
class Cluster:
    repo: Path  # driver = "agent", podIPs written in, no lab visible
    sockets: Path
    env: dict[str, str]  # hides the lab registry from meshctl
    underlay: dict[str, str]  # node -> the lab's underlay address

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return meshctl(self.repo, *args, env=self.env, timeout=120)

    def client(self, node: str) -> AgentClient:
        return AgentClient(node, socket_path(CLUSTER, node, self.sockets), timeout_s=30)

    def set_toml(self, addresses: bool, encryption: bool) -> None:
        toml = self.repo / "meshctl.toml"
        text = re.sub(r'(?m)^address = ".*"\n', "", toml.read_text())
        text = re.sub(r"(?ms)\n\[encryption\].*", "", text)
        if addresses:
            for node, ip in self.underlay.items():
                text = text.replace(f'name = "{node}"\n', f'name = "{node}"\naddress = "{ip}"\n')
        toml.write_text(text + f"\n[encryption]\nenabled = {str(encryption).lower()}\nstrictMode = true\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from meshctl.lab import registry

    base = tmp_path_factory.mktemp("agentwg")
    lab_repo = three_tier_copy(base / "lab-repo", CLUSTER)
    sockets = Path(tempfile.mkdtemp(prefix="mc-ad-", dir="/tmp"))  # short: sun_path is 108 bytes
    hidden = base / "no-lab"
    hidden.mkdir()
    agents: list[subprocess.Popen[bytes]] = []
    try:
        with lab_of(lab_repo):
            pod_ips = registry.pod_ips(CLUSTER)
            underlay = {n: rec.underlay_ip for n, rec in registry.lab_nodes(CLUSTER).items()}
            agents += [start_agent(lab_repo, CLUSTER, node, sockets) for node in NODES]
            repo = agent_driven_repo(base / "cluster-repo", CLUSTER, pod_ips, sockets)
            yield Cluster(repo, sockets, {"MESHCTL_LAB_DIR": str(hidden)}, underlay)
            for proc in agents:  # before the lab goes: agents hold the nodes' maps open
                stop_agent(proc)
    finally:
        for proc in agents:
            stop_agent(proc)
        shutil.rmtree(sockets, ignore_errors=True)


def test_encryption_without_addresses_is_one_clear_error(cluster: Cluster) -> None:
    cluster.set_toml(addresses=False, encryption=True)
    res = cluster.cli("plan")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "node-1, node-2, node-3 have none" in res.stderr
    assert 'set address = "<the node\'s InternalIP>" under [[nodes]] name = "node-1"' in res.stderr
    assert all(not cluster.client(n).observe().encryption.interface for n in NODES)  # nothing applied


def test_rollout_through_the_agents_encrypts_every_node(cluster: Cluster) -> None:
    cluster.set_toml(addresses=True, encryption=True)
    res = cluster.cli("encryption", "rollout")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Encryption rollout complete after 3 step(s)." in res.stdout, res.stdout
    status = cluster.cli("encryption", "status")
    assert status.returncode == 0 and status.stdout.count("2 peer(s), 2 routed") == 3, status.stdout
    live = {n: cluster.client(n).observe().encryption for n in NODES}
    endpoints = {p.endpoint for w in live.values() for p in w.peers.values()}
    assert endpoints == {f"{ip}:51871" for ip in cluster.underlay.values()}
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)  # policy and tunnel both in place
    # the state recorded the keys generated on the nodes (asked of the agents): no drift
    res = cluster.cli("drift", "--detailed-exitcode")
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.cli("plan", "--detailed-exitcode").returncode == 0


def test_rotation_through_the_agents(cluster: Cluster) -> None:
    before = cluster.client("node-2").observe().encryption.public_key
    res = cluster.cli("encryption", "rotate", "--node", "node-2")
    assert res.returncode == 0 and f"current public key {before}" in res.stderr, res.stderr
    res = cluster.cli("encryption", "rollout")
    assert res.returncode == 0, res.stdout + res.stderr
    after = cluster.client("node-2").observe().encryption.public_key
    assert after and after != before
    assert cluster.cli("encryption", "status").stdout.count("2 peer(s), 2 routed") == 3
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)


def test_disable_through_the_agents_needs_no_addresses(cluster: Cluster) -> None:
    cluster.set_toml(addresses=False, encryption=False)
    res = cluster.cli("encryption", "rollout")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Encryption rollout complete after 2 step(s)." in res.stdout, res.stdout
    assert cluster.cli("encryption", "status").stdout.count("no WireGuard device") == 3
    assert connect(CLUSTER, "demo/frontend", "demo/api", 3000)

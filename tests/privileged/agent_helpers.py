"""Start and stop real `meshctl agent` processes for tests (by pid, never by name)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path

import yaml
from apply_helpers import MESHCTL, three_tier_copy

from meshctl.agentapi.protocol import SOCKET_DIR_ENV, socket_path
from meshctl.agentapi.server import answers


def start_agent(repo: Path, cluster: str, node: str, sockets: Path) -> subprocess.Popen[bytes]:
    """An agent for `node` serving its API under `sockets`; returns once the socket answers."""
    proc = subprocess.Popen(
        [str(MESHCTL), "agent", "--node", node, "-C", str(repo), "--metrics-port", "0"],
        env={**os.environ, SOCKET_DIR_ENV: str(sockets)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    path = socket_path(cluster, node, sockets)
    deadline = time.monotonic() + 20
    while not answers(path):
        assert proc.poll() is None, f"agent of {node} exited ({proc.returncode})"
        assert time.monotonic() < deadline, f"agent of {node} did not open {path}"
        time.sleep(0.05)
    return proc


def stop_agent(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def agent_driven_repo(dest: Path, cluster: str, pod_ips: dict[str, IPv4Address], sockets: Path) -> Path:
    """A copy of three-tier that knows its pods' IPs (status.podIP) and drives nodes via agents."""
    repo = three_tier_copy(dest, cluster)
    pods_file = repo / "inventory" / "pods.yaml"
    docs = [d for d in yaml.safe_load_all(pods_file.read_text()) if d]
    for doc in docs:
        key = f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"
        doc.setdefault("status", {})["podIP"] = str(pod_ips[key])
    pods_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    toml = repo / "meshctl.toml"
    toml.write_text(toml.read_text() + f'\n[apply]\ndriver = "agent"\nsocketDir = "{sockets}"\n')
    return repo

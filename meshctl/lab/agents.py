"""The lab's flow agents: `lab up` starts one `meshctl agent` per node, `lab down` stops them.

Pids are kept in <lab run dir>/<cluster>.agents.json. A pid is only signalled after
/proc/PID/cmdline shows it is this cluster's agent for that node (pids get reused).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from meshctl.lab.netns import nsenter_argv
from meshctl.lab.registry import Registry, log_dir, run_dir
from meshctl.localproc import cmdline


def pid_file(cluster: str) -> Path:
    return run_dir() / f"{cluster}.agents.json"


def _argv(repo: Path, cluster: str, node: str) -> list[str]:
    exe = Path(sys.executable).parent / "meshctl"
    head = [str(exe)] if exe.exists() else [sys.executable, "-c", "from meshctl.cli.main import main; main()"]
    return [*head, "agent", "--node", node, "-C", str(repo.resolve()), "--cluster", cluster]


def is_agent(pid: int, cluster: str, node: str) -> bool:
    argv = cmdline(pid)
    if "agent" not in argv or "--node" not in argv or "--cluster" not in argv:
        return False
    try:
        return argv[argv.index("--node") + 1] == node and argv[argv.index("--cluster") + 1] == cluster
    except IndexError:
        return False


def running(cluster: str) -> dict[str, int]:
    """node -> pid of the agents of `cluster` that are alive."""
    try:
        pids = json.loads(pid_file(cluster).read_text())
    except (OSError, ValueError):
        return {}
    return {node: pid for node, pid in pids.items() if is_agent(int(pid), cluster, node)}


@dataclass(frozen=True)
class TcpApi:
    """A lab agent serving its API over TCP: inside its node's netns, on its underlay address,
    with the node's certificate (mutual TLS), or plain with `tls` None (`insecure = true`)."""

    netns: str
    address: str
    port: int
    tls: tuple[Path, Path, Path] | None  # CA, certificate, key

    def wrap(self, argv: list[str]) -> list[str]:
        args = [*argv, "--listen", f"{self.address}:{self.port}"]
        if self.tls is None:
            args.append("--insecure")
        else:
            ca, cert, key = self.tls
            args += ["--tls-ca", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]
        return nsenter_argv(self.netns, args)


def pki_dir(cluster: str) -> Path:
    """The lab nodes' certificates and keys (node side: never in the repo)."""
    return run_dir() / f"{cluster}.pki"


def tcp_apis(reg: Registry, settings: Any) -> dict[str, TcpApi]:
    """Prepare the agents of `reg` for the API over TCP ([agents] port): this host's link to the
    underlay, the lab CA with the CLI's client certificate at the configured paths (made once),
    and a fresh certificate per node naming it. Empty without a port."""
    from meshctl.lab import network, pki
    from meshctl.lab.topology import host_address

    if settings is None or settings.port is None:
        return {}
    cidr = IPv4Network(reg.underlay_cidr)
    network.ensure_host_link(reg.cluster, cidr, host_address(cidr))
    authority = None if settings.insecure else pki.ensure_lab_pki(settings.ca, settings.cert, settings.key)
    out = {}
    for name, node in reg.nodes.items():
        tls = None
        if authority is not None:
            cert, key = pki.issue_node(authority, pki_dir(reg.cluster), name, node.underlay_ip)
            tls = (settings.ca, cert, key)
        out[name] = TcpApi(node.netns, node.underlay_ip, settings.port, tls)
    return out


def start(repo: Path, cluster: str, nodes: list[str],
          tcp: Mapping[str, TcpApi] | None = None) -> dict[str, int]:
    """Start the missing agents (detached, logs in the lab's log dir); returns node -> pid. A node
    in `tcp` gets its agent in its netns, serving the API over TCP."""
    pids = running(cluster)
    logs = log_dir(cluster)
    logs.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        if node in pids:
            continue
        with open(logs / f"agent-{node}.log", "ab") as log:
            argv = _argv(repo, cluster, node)
            if tcp and node in tcp:
                argv = tcp[node].wrap(argv)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True, cwd="/")
        pids[node] = proc.pid
    pid_file(cluster).parent.mkdir(parents=True, exist_ok=True)
    pid_file(cluster).write_text(json.dumps(pids, sort_keys=True))
    return pids


def stop(cluster: str, timeout: float = 5.0) -> list[int]:
    """SIGTERM each agent of the cluster (it flushes its last batch), SIGKILL after timeout."""
    pids = running(cluster)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for node, pid in pids.items():
        while is_agent(pid, cluster, node) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)
        if is_agent(pid, cluster, node):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pid_file(cluster).unlink(missing_ok=True)
    return sorted(pids.values())

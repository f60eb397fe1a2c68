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
from pathlib import Path

from meshctl.lab.registry import log_dir, run_dir


def pid_file(cluster: str) -> Path:
    return run_dir() / f"{cluster}.agents.json"


def _argv(repo: Path, cluster: str, node: str) -> list[str]:
    exe = Path(sys.executable).parent / "meshctl"
    head = [str(exe)] if exe.exists() else [sys.executable, "-c", "from meshctl.cli.main import main; main()"]
    return [*head, "agent", "--node", node, "-C", str(repo.resolve()), "--cluster", cluster]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_agent(pid: int, cluster: str, node: str) -> bool:
    argv = _cmdline(pid)
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


def start(repo: Path, cluster: str, nodes: list[str]) -> dict[str, int]:
    """Start the missing agents (detached, logs in the lab's log dir); returns node -> pid."""
    pids = running(cluster)
    logs = log_dir(cluster)
    logs.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        if node in pids:
            continue
        with open(logs / f"agent-{node}.log", "ab") as log:
            proc = subprocess.Popen(_argv(repo, cluster, node), stdin=subprocess.DEVNULL, stdout=log,
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

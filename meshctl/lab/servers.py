"""Starting and stopping the pod servers: detached processes found again by pid + cmdline.

A pid from the registry is only ever signalled after /proc/PID/cmdline shows it is this
cluster's server for that pod: pids get reused, and killing a stranger is never acceptable.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from meshctl.errors import LabError
from meshctl.lab import dnszone
from meshctl.lab.netns import nsenter_argv
from meshctl.lab.registry import PodRecord, log_dir
from meshctl.localproc import cmdline

MODULE = "meshctl.lab.server"


def server_argv(cluster: str, pod: PodRecord) -> list[str]:
    argv = [sys.executable, "-m", MODULE, "--cluster", cluster, "--name", pod.key]
    for p in pod.tcp_ports:
        argv += ["--tcp", str(p)]
    for p in pod.udp_ports:
        argv += ["--udp", str(p)]
    if pod.bind:
        argv += ["--bind", pod.bind]
    if pod.dns:
        argv += ["--dns-zone", str(dnszone.zone_path(cluster))]
    return argv


def is_lab_server(pid: int, cluster: str, pod: str | None = None) -> bool:
    """True when pid is a running meshctl lab server of `cluster` (and of `pod` if given)."""
    argv = cmdline(pid)
    if not argv or MODULE not in argv:
        return False
    try:
        if argv[argv.index("--cluster") + 1] != cluster:
            return False
        return pod is None or argv[argv.index("--name") + 1] == pod
    except (ValueError, IndexError):
        return False


def matches(pid: int | None, cluster: str, pod: PodRecord) -> bool:
    """The running server is this pod's and serves exactly the declared ports."""
    if pid is None or not is_lab_server(pid, cluster, pod.key):
        return False
    argv = cmdline(pid)
    return argv[: len(server_argv(cluster, pod))][1:] == server_argv(cluster, pod)[1:]


def start(cluster: str, pod: PodRecord, timeout: float = 5.0) -> int:
    """Start the pod's server in its netns, detached; return its pid once it listens."""
    logs = log_dir(cluster)
    logs.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    argv = nsenter_argv(pod.netns, [*server_argv(cluster, pod), "--ready-fd", str(w)])
    with open(logs / f"{pod.key.replace('/', '_')}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, pass_fds=(w,), cwd="/")
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        line = os.read(r, 64) if ready else b""
    finally:
        os.close(r)
    if line != b"ready\n":
        stop(cluster, proc.pid, pod.key)
        raise LabError(f"server of pod {pod.key} did not start; see {logs}")
    # nsenter execs the server, so the child pid is the server's pid (no zombie left to reap
    # by us beyond this Popen, which we detach from).
    return proc.pid


def stop(cluster: str, pid: int | None, pod: str | None = None, timeout: float = 2.0) -> None:
    """SIGTERM then SIGKILL, only if pid is still this cluster's server."""
    if pid is None or not is_lab_server(pid, cluster, pod):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_lab_server(pid, cluster, pod):
            return
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def find_all(cluster: str) -> list[int]:
    """Every running server of this cluster (also those a crash left out of the registry)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_lab_server(int(entry.name), cluster):
            pids.append(int(entry.name))
    return pids

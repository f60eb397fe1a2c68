"""One Envoy per node, kept running by the node's agent.

Envoy starts the first time the node holds HTTP rules (its routes file exists: a reconcile wrote
it) and is never torn down by an apply: rules change by replacing the routes file. When Envoy
dies the supervisor starts it again; in between, the datapath drops new connections to L7 ports
(the listener is missing: REASON_PROXY_DOWN), so nothing passes unchecked. An Envoy left by an
agent that died is adopted (pid file + cmdline), not started twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time

from meshctl.dataplane.envoy import ProxyFiles, envoy_binary
from meshctl.dataplane.netns import netns_path
from meshctl.dataplane.proxyroute import ensure_proxy_routing
from meshctl.localproc import cmdline

log = logging.getLogger(__name__)
POLL_S = 0.1
ACCESS_LOG_FLUSH_MS = 200  # the access log feeds the flow store: flows show up within a poll or two


def envoy_pid(files: ProxyFiles) -> int | None:
    """The pid of this node's Envoy when it runs (its cmdline names this bootstrap)."""
    try:
        pid = int((files.dir / "envoy.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if str(files.bootstrap) in cmdline(pid) else None


def stop_envoy(files: ProxyFiles, timeout: float = 5.0) -> int | None:
    """SIGTERM (then SIGKILL) the node's Envoy, only after its cmdline shows it is ours; its pid."""
    pid = envoy_pid(files)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while envoy_pid(files) == pid and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    if envoy_pid(files) == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


class EnvoySupervisor:
    """Keeps the node's Envoy running in its netns (None: this host's)."""

    def __init__(self, cluster: str, node: str, netns: str | None) -> None:
        self.cluster, self.node, self.netns = cluster, node, netns
        self.files = ProxyFiles.of(cluster, node)
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [str(envoy_binary()), "-c", str(self.files.bootstrap), "--concurrency", "1",
                "--disable-hot-restart", "-l", "warning", "--service-node", self.node,
                "--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS)]
        if self.netns:
            argv = ["nsenter", f"--net={netns_path(self.netns)}", "--", *argv]
        return argv

    def start(self) -> None:
        ensure_proxy_routing(self.netns)
        self.files.write_bootstrap(self.node, self.cluster)
        with open(self.files.dir / "envoy.log", "ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, cwd="/")
        (self.files.dir / "envoy.pid").write_text(str(self.proc.pid))
        log.info("proxy %s: envoy started (pid %d)", self.node, self.proc.pid)

    def alive(self) -> bool:
        if self.proc is not None:
            if self.proc.poll() is None:
                return True
            log.warning("proxy %s: envoy exited (%s)", self.node, self.proc.returncode)
            self.proc = None
            return False
        return envoy_pid(self.files) is not None  # adopted: started by an agent before this one

    def run(self, stop: threading.Event) -> None:
        backoff = POLL_S
        while not stop.is_set():
            if not self.alive() and self.files.routes.exists():
                try:
                    self.start()
                    backoff = POLL_S
                except OSError as err:
                    log.error("proxy %s: cannot start envoy: %s", self.node, err)
                    backoff = min(backoff * 2, 5.0)
            stop.wait(backoff)
        if self.proc is not None:
            stop_envoy(self.files)


def start_supervisor(cluster: str, node: str, netns: str | None, stop: threading.Event) -> threading.Thread:
    sup = EnvoySupervisor(cluster, node, netns)
    thread = threading.Thread(target=sup.run, args=(stop,), name=f"proxy-{node}", daemon=True)
    thread.start()
    return thread

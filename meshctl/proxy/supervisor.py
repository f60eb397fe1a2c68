"""The node's proxies, one Envoy and one DNS proxy per node, kept running by the node's agent.

Each starts the first time the node holds its rules (Envoy's routes file, the DNS proxy's rules
file: a reconcile wrote it) and is never torn down by an apply: rules change by replacing the
file. When one dies the supervisor starts it again; in between, the datapath drops what goes to
its ports (the socket is missing: REASON_PROXY_DOWN), so nothing passes unchecked. A proxy left
by an agent that died is adopted (pid file + cmdline), not started twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from meshctl.dataplane.dnsproxy import DnsFiles
from meshctl.dataplane.envoy import ProxyFiles, envoy_binary
from meshctl.dataplane.netns import netns_path
from meshctl.dataplane.proxyroute import ensure_proxy_routing
from meshctl.localproc import cmdline

log = logging.getLogger(__name__)
POLL_S = 0.1
ACCESS_LOG_FLUSH_MS = 200  # the access log feeds the flow store: flows show up within a poll or two


def envoy_pid(files: ProxyFiles) -> int | None:
    """The pid of this node's Envoy when it runs (its cmdline names this bootstrap)."""
    return _our_pid(files.dir / "envoy.pid", str(files.bootstrap))


def dns_proxy_pid(files: DnsFiles) -> int | None:
    """The pid of this node's DNS proxy when it runs (its cmdline names this directory)."""
    return _our_pid(files.pid, str(files.dir))


def _our_pid(pid_file: Path, mark: str) -> int | None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    return pid if mark in cmdline(pid) else None


def stop_envoy(files: ProxyFiles, timeout: float = 5.0) -> int | None:
    """SIGTERM (then SIGKILL) the node's Envoy, only after its cmdline shows it is ours; its pid."""
    return _stop(lambda: envoy_pid(files), timeout)


def stop_dns_proxy(files: DnsFiles, timeout: float = 5.0) -> int | None:
    """The same for the node's DNS proxy."""
    return _stop(lambda: dns_proxy_pid(files), timeout)


def _stop(pid_of: Callable[[], int | None], timeout: float) -> int | None:
    pid = pid_of()
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_of() == pid and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    if pid_of() == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


class Supervisor:
    """Keeps one proxy process of the node running in its netns (None: this host's), once its
    rules file (`trigger`) exists; adopts one a previous agent left running."""

    name = ""

    def __init__(self, cluster: str, node: str, netns: str | None) -> None:
        self.cluster, self.node, self.netns = cluster, node, netns
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def trigger(self) -> Path:
        raise NotImplementedError

    @property
    def logfile(self) -> Path:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def running_pid(self) -> int | None:
        raise NotImplementedError

    def stop_running(self) -> None:
        raise NotImplementedError

    def prepare(self) -> None:
        ensure_proxy_routing(self.netns)

    def started(self, pid: int) -> None:
        """Called with the new process's pid."""

    def start(self) -> None:
        self.prepare()
        argv = self.command()
        if self.netns:
            argv = ["nsenter", f"--net={netns_path(self.netns)}", "--", *argv]
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, cwd="/")
        self.started(self.proc.pid)
        log.info("proxy %s: %s started (pid %d)", self.node, self.name, self.proc.pid)

    def alive(self) -> bool:
        if self.proc is not None:
            if self.proc.poll() is None:
                return True
            log.warning("proxy %s: %s exited (%s)", self.node, self.name, self.proc.returncode)
            self.proc = None
            return False
        return self.running_pid() is not None  # adopted: started by an agent before this one

    def run(self, stop: threading.Event) -> None:
        backoff = POLL_S
        while not stop.is_set():
            if not self.alive() and self.trigger.exists():
                try:
                    self.start()
                    backoff = POLL_S
                except OSError as err:
                    log.error("proxy %s: cannot start %s: %s", self.node, self.name, err)
                    backoff = min(backoff * 2, 5.0)
            stop.wait(backoff)
        if self.proc is not None:
            self.stop_running()


class EnvoySupervisor(Supervisor):
    """The node's Envoy: starts once a reconcile wrote its routes file."""

    name = "envoy"

    def __init__(self, cluster: str, node: str, netns: str | None) -> None:
        super().__init__(cluster, node, netns)
        self.files = ProxyFiles.of(cluster, node)

    @property
    def trigger(self) -> Path:
        return self.files.routes

    @property
    def logfile(self) -> Path:
        return self.files.dir / "envoy.log"

    def command(self) -> list[str]:
        return [str(envoy_binary()), "-c", str(self.files.bootstrap), "--concurrency", "1",
                "--disable-hot-restart", "-l", "warning", "--service-node", self.node,
                "--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS)]

    def running_pid(self) -> int | None:
        return envoy_pid(self.files)

    def stop_running(self) -> None:
        stop_envoy(self.files)

    def prepare(self) -> None:
        super().prepare()
        self.files.write_bootstrap(self.node, self.cluster)

    def started(self, pid: int) -> None:
        (self.files.dir / "envoy.pid").write_text(str(pid))


class DnsSupervisor(Supervisor):
    """The node's DNS proxy (meshctl.proxy.dns): starts once a reconcile wrote its rules file."""

    name = "dns proxy"

    def __init__(self, cluster: str, node: str, netns: str | None) -> None:
        super().__init__(cluster, node, netns)
        self.files = DnsFiles.of(cluster, node)

    @property
    def trigger(self) -> Path:
        return self.files.rules

    @property
    def logfile(self) -> Path:
        return self.files.dir / "proxy.log"

    def command(self) -> list[str]:
        from meshctl.dataplane.node import node_pin_dir

        return [sys.executable, "-m", "meshctl.proxy.dns", "--dir", str(self.files.dir),
                "--pins", str(node_pin_dir(self.cluster, self.node))]

    def running_pid(self) -> int | None:
        return dns_proxy_pid(self.files)

    def stop_running(self) -> None:
        stop_dns_proxy(self.files)


def start_supervisor(cluster: str, node: str, netns: str | None,
                     stop: threading.Event) -> list[threading.Thread]:
    """The node's proxies (Envoy, the DNS proxy), each kept running by a thread of the agent."""
    threads = []
    for sup in (EnvoySupervisor(cluster, node, netns), DnsSupervisor(cluster, node, netns)):
        thread = threading.Thread(target=sup.run, args=(stop,), name=f"proxy-{sup.name}-{node}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads

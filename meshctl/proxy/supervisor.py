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
from dataclasses import dataclass
from pathlib import Path

from meshctl.dataplane.dnsproxy import DnsFiles, proxy_pid
from meshctl.dataplane.envoy import ProxyFiles, envoy_binary
from meshctl.dataplane.netns import netns_path
from meshctl.dataplane.proxyroute import ensure_proxy_routing
from meshctl.localproc import pid_in_file

log = logging.getLogger(__name__)
POLL_S = 0.1
ACCESS_LOG_FLUSH_MS = 200  # the access log feeds the flow store: flows show up within a poll or two


def envoy_pid(files: ProxyFiles) -> int | None:
    """The pid of this node's Envoy when it runs (its cmdline names this bootstrap)."""
    return pid_in_file(files.dir / "envoy.pid", str(files.bootstrap))


def stop_envoy(files: ProxyFiles, timeout: float = 5.0) -> int | None:
    """SIGTERM (then SIGKILL) the node's Envoy, only after its cmdline shows it is ours; its pid."""
    return _stop(lambda: envoy_pid(files), timeout)


def stop_dns_proxy(files: DnsFiles, timeout: float = 5.0) -> int | None:
    """The same for the node's DNS proxy."""
    return _stop(lambda: proxy_pid(files), timeout)


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


@dataclass
class Supervisor:
    """Keeps one proxy process of the node running in its netns (None: this host's), once its
    rules file (`trigger`) exists; adopts one a previous agent left running (`pid_of`)."""

    name: str
    node: str
    netns: str | None
    trigger: Path
    logfile: Path
    command: Callable[[], list[str]]
    pid_of: Callable[[], int | None]
    prepare: Callable[[], None]
    pid_file: Path | None = None  # where its pid is written (None: the process writes its own)
    # left running when the agent stops, for the next agent to adopt (`lab down` stops it): a
    # restarted agent costs no DNS outage (cilium/cilium#16364)
    outlives_agent: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ensure_proxy_routing(self.netns)
        self.prepare()
        argv = self.command()
        if self.netns:
            argv = ["nsenter", f"--net={netns_path(self.netns)}", "--", *argv]
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, cwd="/")
        if self.pid_file is not None:
            self.pid_file.write_text(str(self.proc.pid))
        log.info("proxy %s: %s started (pid %d)", self.node, self.name, self.proc.pid)

    def alive(self) -> bool:
        if self.proc is not None:
            if self.proc.poll() is None:
                return True
            log.warning("proxy %s: %s exited (%s)", self.node, self.name, self.proc.returncode)
            self.proc = None
            return False
        return self.pid_of() is not None  # adopted: started by an agent before this one

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
        if self.proc is not None and not self.outlives_agent:
            _stop(self.pid_of, 5.0)


def envoy_supervisor(cluster: str, node: str, netns: str | None) -> Supervisor:
    """The node's Envoy: starts once a reconcile wrote its routes file."""
    files = ProxyFiles.of(cluster, node)
    return Supervisor(
        "envoy", node, netns, files.routes, files.dir / "envoy.log",
        lambda: [str(envoy_binary()), "-c", str(files.bootstrap), "--concurrency", "1",
                 "--disable-hot-restart", "-l", "warning", "--service-node", node,
                 "--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS)],
        lambda: envoy_pid(files), lambda: files.write_bootstrap(node, cluster), files.dir / "envoy.pid")


def dns_supervisor(cluster: str, node: str, netns: str | None) -> Supervisor:
    """The node's DNS proxy (meshctl.proxy.dns): starts once a reconcile wrote its rules file."""
    from meshctl.dataplane.node import node_pin_dir

    files = DnsFiles.of(cluster, node)
    return Supervisor(
        "dns proxy", node, netns, files.rules, files.dir / "proxy.log",
        lambda: [sys.executable, "-m", "meshctl.proxy.dns", "--dir", str(files.dir),
                 "--pins", str(node_pin_dir(cluster, node))],
        lambda: proxy_pid(files), lambda: None, outlives_agent=True)


def start_supervisor(cluster: str, node: str, netns: str | None,
                     stop: threading.Event) -> list[threading.Thread]:
    """The node's proxies (Envoy, the DNS proxy), each kept running by a thread of the agent."""
    threads = []
    for sup in (envoy_supervisor(cluster, node, netns), dns_supervisor(cluster, node, netns)):
        thread = threading.Thread(target=sup.run, args=(stop,), name=f"proxy-{sup.name}-{node}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads

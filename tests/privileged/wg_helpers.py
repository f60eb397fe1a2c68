"""Helpers of the WireGuard lab tests: underlay captures, a connection loop, key searches."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from meshctl.lab import names


@dataclass
class Capture:
    pcap: Path
    summary: str = ""

    def payload_has(self, marker: bytes) -> bool:
        return marker in self.pcap.read_bytes()

    def ip_lines(self) -> list[str]:
        return [line for line in self.summary.splitlines() if " IP " in line]


@contextmanager
def underlay_capture(cluster: str, tmp: Path) -> Iterator[Capture]:
    """tcpdump on every port of the underlay bridge (all unicast IP between nodes) for the block.

    Multicast is left out: a new interface sends IGMP membership reports on its own, which are
    not pod traffic and would make "only WireGuard UDP crossed" flaky."""
    pcap = tmp / f"underlay-{time.monotonic_ns()}.pcap"
    ns = names.underlay_netns(cluster)
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{ns}", "--", "tcpdump", "-Z", "root", "-i", "any",
         "--immediate-mode", "-U", "-s", "0", "-w", str(pcap), "ip and not ip multicast"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    cap = Capture(pcap)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()  # "listening on any, ..." once the socket is bound
        while line and "listening on" not in line:
            line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("tcpdump exited before listening")
        time.sleep(0.05)
        yield cap
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=5)
    cap.summary = subprocess.run(["tcpdump", "-nn", "-r", str(pcap)], capture_output=True,
                                 text=True).stdout


@dataclass
class ConnectionLoop:
    """TCP connects from one pod netns to a remote pod, back to back, in a thread."""

    netns: str
    dst_ip: str
    port: int
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from meshctl.lab.probe import tcp_connect_in

        while not self._stop.is_set():
            res = tcp_connect_in(self.netns, self.dst_ip, self.port, timeout=2.0)
            if res.ok:
                self.ok += 1
            else:
                self.failed.append(res.error)
            time.sleep(0.005)


@contextmanager
def connection_loop(netns: str, dst_ip: str, port: int) -> Iterator[ConnectionLoop]:
    loop = ConnectionLoop(netns, dst_ip, port)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop._stop.set()
        thread.join(timeout=10)
    print(f"connection loop {netns} -> {dst_ip}:{port}: {loop.ok} ok, {len(loop.failed)} failed")


def private_keys(cluster: str, nodes: list[str]) -> dict[str, str]:
    """Every node's private key, read ONLY by tests that prove it leaks nowhere."""
    from meshctl.dataplane.wireguard.names import key_dir

    out = {}
    for n in nodes:
        path = key_dir(cluster, n) / "private.key"
        if path.exists():
            out[n] = path.read_text().strip()
    return out

"""Helpers shared by the kernel-binding tests: build tiny BPF objects, unique names."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURES = HERE / "bpf_fixtures"
PIN_ROOT = Path("/sys/fs/bpf/meshctl")


def compile_fixture(name: str, outdir: Path, variant: int = 0) -> Path:
    """clang a fixture from bpf_fixtures/ (with bpf/lib on the include path) into outdir.

    `variant` is passed as -DVARIANT=n: the same program with a different build hash.
    """
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    out = outdir / f"{name}-{variant}.o"
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", f"-DVARIANT={variant}",
         f"-I{REPO / 'bpf' / 'lib'}", "-c", str(FIXTURES / f"{name}.c"), "-o", str(out)],
        check=True, capture_output=True,
    )
    return out


DATAPATH_OBJECT = REPO / "bpf" / "build" / "datapath.o"


def datapath_object() -> Path:
    """The real bpf/datapath.c object (built by `make -C bpf`, which setup runs)."""
    if not DATAPATH_OBJECT.exists():
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], check=True, capture_output=True)
    return DATAPATH_OBJECT


def ensure_bpffs() -> None:
    with open("/proc/mounts") as f:
        if any(line.startswith("bpf /sys/fs/bpf bpf") for line in f):
            return
    subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


def unique(prefix: str) -> str:
    """A short unique name (netns, cluster) for this test process."""
    return f"{prefix}{os.getpid() % 100000}-{os.urandom(2).hex()}"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class PodLink:
    """A pod netns wired to a node netns by a veth; the node side has a /32 route to the pod."""

    pod_ns: str
    ifname: str  # node-side veth
    pod_ip: IPv4Address
    node_ip: IPv4Address


@dataclass
class NodeNet:
    """A node netns and its pods, all named mc-bd-*."""

    ns: str
    pods: list[PodLink] = field(default_factory=list)

    def add_pod(self, index: int) -> PodLink:
        pod_ns = f"{self.ns}-p{index}"
        ifname = f"lxcbd{index}"
        pod_ip, node_ip = IPv4Address(f"10.77.{index}.2"), IPv4Address(f"10.77.{index}.1")
        ip("netns", "add", pod_ns)
        self.pods.append(PodLink(pod_ns, ifname, pod_ip, node_ip))
        ip("-n", self.ns, "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns", pod_ns)
        ip("-n", self.ns, "addr", "add", f"{node_ip}/32", "dev", ifname)
        ip("-n", self.ns, "link", "set", ifname, "up")
        ip("-n", self.ns, "route", "add", f"{pod_ip}/32", "dev", ifname)
        ip("-n", pod_ns, "addr", "add", f"{pod_ip}/32", "dev", "eth0")
        ip("-n", pod_ns, "link", "set", "eth0", "up")
        ip("-n", pod_ns, "link", "set", "lo", "up")
        ip("-n", pod_ns, "route", "add", f"{node_ip}/32", "dev", "eth0")
        ip("-n", pod_ns, "route", "add", "default", "via", str(node_ip), "dev", "eth0")
        return self.pods[-1]


@contextmanager
def node_net(npods: int = 1) -> Iterator[NodeNet]:
    """A node netns with npods pods; everything is deleted afterwards."""
    net = NodeNet(unique("mc-bd-"))
    ip("netns", "add", net.ns)
    try:
        ip("-n", net.ns, "link", "set", "lo", "up")
        for i in range(npods):
            net.add_pod(i)
        yield net
    finally:
        for pod in net.pods:
            subprocess.run(["ip", "netns", "del", pod.pod_ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", net.ns], capture_output=True)


def tcp_connects(server_ns: str, server_ip: IPv4Address, client_ns: str, timeout: float = 0.3) -> bool:
    """One real TCP connection from client_ns to a listener in server_ns; True if it completes."""
    from meshctl.dataplane.netns import in_netns

    with in_netns(server_ns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((str(server_ip), 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        with in_netns(client_ns):
            cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            cli.settimeout(timeout)
            try:
                cli.connect((str(server_ip), port))
            except OSError:
                return False
            srv.settimeout(timeout)
            conn, _ = srv.accept()
            cli.sendall(b"ping")
            ok = conn.recv(4) == b"ping"
            conn.close()
            return ok
        finally:
            cli.close()
    finally:
        srv.close()

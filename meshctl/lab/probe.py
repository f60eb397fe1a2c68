"""Connections from inside a lab pod, like curl and nc: for tests, checks and apply verification.

The socket is created inside the source pod's netns (setns on this thread, then back), so a
probe costs one connect and no process start. Every function returns a ProbeResult; none raises
for a failed connection (only for a lab that does not exist).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

from meshctl.errors import LabError
from meshctl.flows.probe import exchange, udp_payload
from meshctl.lab import registry
from meshctl.lab.netns import entered


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reply: str = ""
    error: str = ""
    elapsed_s: float = 0.0

    def __bool__(self) -> bool:
        return self.ok


def _socket_in(netns: str, kind: int) -> socket.socket:
    with entered(netns):
        return socket.socket(socket.AF_INET, kind)


def _netns_of(cluster: str, src: str) -> str:
    return registry.pod(cluster, src).netns


def connect(cluster: str, src: str, dst_ip: IPv4Address | str, port: int, protocol: str = "TCP",
            timeout: float = 1.0) -> ProbeResult:
    """Connect from pod `src` ("ns/pod") to dst_ip:port and read the first reply line.

    TCP: ok when the connection opens and the server's line arrives. UDP: ok when the echo
    comes back (a UDP drop shows as a timeout).
    """
    netns = _netns_of(cluster, src)
    if protocol.upper() == "UDP":
        return udp_exchange_in(netns, str(dst_ip), port, udp_payload(port), timeout)
    if protocol.upper() != "TCP":
        return ProbeResult(False, error=f"protocol {protocol} not supported by the lab probe")
    return tcp_connect_in(netns, str(dst_ip), port, timeout)


def connect_external(cluster: str, dst_ip: IPv4Address | str, port: int, protocol: str = "TCP",
                     timeout: float = 1.0) -> ProbeResult:
    """Connect from the lab's external client (outside the cluster) to dst_ip:port.

    The client exists when meshctl.toml has kubeProxyReplacement on; it reaches node underlay
    addresses (NodePorts) directly and LoadBalancer/external IPs via a node.
    """
    ext = registry.require(cluster).external
    if ext is None:
        raise LabError(f"lab {cluster!r} has no external client: set kubeProxyReplacement = true "
                       "under [cluster] in meshctl.toml and run `meshctl lab up` again")
    if protocol.upper() == "UDP":
        return udp_exchange_in(ext.netns, str(dst_ip), port, udp_payload(port), timeout)
    if protocol.upper() != "TCP":
        return ProbeResult(False, error=f"protocol {protocol} not supported by the lab probe")
    return tcp_connect_in(ext.netns, str(dst_ip), port, timeout)


def tcp_connect_in(netns: str, dst_ip: str, port: int, timeout: float = 1.0) -> ProbeResult:
    start = time.perf_counter()
    sock = _socket_in(netns, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((dst_ip, port))
        reply = exchange(sock, port)
        if not reply:
            return ProbeResult(False, error="connection closed without a reply",
                               elapsed_s=time.perf_counter() - start)
        return ProbeResult(True, reply=reply, elapsed_s=time.perf_counter() - start)
    except OSError as err:
        return ProbeResult(False, error=_describe(err), elapsed_s=time.perf_counter() - start)
    finally:
        sock.close()


def udp_exchange_in(netns: str, dst_ip: str, port: int, payload: bytes = b"probe",
                    timeout: float = 1.0) -> ProbeResult:
    start = time.perf_counter()
    sock = _socket_in(netns, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect((dst_ip, port))
        sock.send(payload)
        reply = sock.recv(65535).decode(errors="replace")
        return ProbeResult(True, reply=reply, elapsed_s=time.perf_counter() - start)
    except OSError as err:
        return ProbeResult(False, error=_describe(err), elapsed_s=time.perf_counter() - start)
    finally:
        sock.close()


def udp_unsolicited(cluster: str, src: str, dst: str, port: int, sport: int | None = None,
                    payload: bytes = b"unsolicited", timeout: float = 0.5) -> ProbeResult:
    """Send one UDP datagram from pod src to pod dst:port with a fresh receiver bound in dst.

    ok = the datagram arrived. Used to show that a packet that is not a reply of an allowed
    flow is dropped. `sport` pins the source port (e.g. to mimic a server's port).
    """
    src_rec, dst_rec = registry.pod(cluster, src), registry.pod(cluster, dst)
    start = time.perf_counter()
    rx = _socket_in(dst_rec.netns, socket.SOCK_DGRAM)
    tx = _socket_in(src_rec.netns, socket.SOCK_DGRAM)
    try:
        rx.settimeout(timeout)
        rx.bind(("0.0.0.0", port))
        if sport is not None:
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tx.bind(("0.0.0.0", sport))
        tx.sendto(payload, (dst_rec.ip, port))
        data, peer = rx.recvfrom(65535)
        return ProbeResult(True, reply=f"{peer[0]}:{peer[1]} {data.decode(errors='replace')}",
                           elapsed_s=time.perf_counter() - start)
    except OSError as err:
        return ProbeResult(False, error=_describe(err), elapsed_s=time.perf_counter() - start)
    finally:
        tx.close()
        rx.close()


def _describe(err: OSError) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    return err.strerror or str(err)


def main(argv: list[str] | None = None) -> int:
    """`python -m meshctl.lab.probe CLUSTER NS/POD IP PORT [--udp]`: one probe, exit 0 if ok."""
    ap = argparse.ArgumentParser(prog="meshctl.lab.probe")
    ap.add_argument("cluster")
    ap.add_argument("src")
    ap.add_argument("dst_ip")
    ap.add_argument("port", type=int)
    ap.add_argument("--udp", action="store_true")
    ap.add_argument("--timeout", type=float, default=1.0)
    a = ap.parse_args(argv)
    res = connect(a.cluster, a.src, a.dst_ip, a.port, "UDP" if a.udp else "TCP", a.timeout)
    print(res.reply if res.ok else f"failed: {res.error}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())

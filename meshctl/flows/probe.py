"""Connections for `connectivity test` that know their own source port.

Same success rules as the lab's probes (meshctl.lab.probe; TCP: connected and the server's
line arrived; UDP: the echo came back), but the socket is bound before it connects, so the check can find ITS
flow in the store by source port (checks run in parallel, often between the same pods).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from meshctl.dataplane.netns import in_netns


@dataclass(frozen=True)
class Attempt:
    ok: bool
    sport: int
    error: str = ""


def _describe(err: OSError) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    return err.strerror or str(err)


def attempt(netns: str, dst_ip: str, port: int, protocol: str, timeout: float) -> Attempt:
    """One connection from inside `netns`; never raises for a failed connection."""
    udp = protocol.upper() == "UDP"
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", 0))
        sport = int(sock.getsockname()[1])
        sock.settimeout(timeout)
        try:
            sock.connect((dst_ip, port))
            if udp:
                sock.send(b"probe")
                return Attempt(bool(sock.recv(65535)), sport)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
            if not data.strip():
                return Attempt(False, sport, "connection closed without a reply")
            return Attempt(True, sport)
        except OSError as err:
            return Attempt(False, sport, _describe(err))
    finally:
        sock.close()

"""Connections for `connectivity test` that know their own source port.

Same success rules as the lab's probes (meshctl.lab.probe; TCP: connected and an HTTP answer
arrived; UDP: the echo came back), but the socket is bound before it connects, so the check can find ITS
flow in the store by source port (checks run in parallel, often between the same pods). Port 53
is asked a DNS query (over UDP, or length-prefixed over TCP): a DNS proxy judges only DNS, and
any answer, REFUSED included, shows the connection passes.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from dnslib import RCODE, DNSError, DNSRecord

from meshctl.dataplane.netns import in_netns
from meshctl.dnswire import recv_message, send_message
from meshctl.nodestate import DNS_PORT


@dataclass(frozen=True)
class Attempt:
    ok: bool
    sport: int
    error: str = ""


PROBE_REQUEST = b"GET / HTTP/1.1\r\nHost: probe\r\nUser-Agent: meshctl-probe\r\nConnection: close\r\n\r\n"
PROBE_NAME = "probe.meshctl.invalid"


def udp_payload(port: int) -> bytes:
    """What a UDP probe sends to `port`."""
    return DNSRecord.question(PROBE_NAME).pack() if port == DNS_PORT else b"probe"  # type: ignore[no-any-return]


def exchange(sock: socket.socket, port: int) -> str:
    """A connected TCP probe's question and answer (see tcp_exchange and dns_exchange)."""
    return dns_exchange(sock) if port == DNS_PORT else tcp_exchange(sock)


def dns_exchange(sock: socket.socket) -> str:
    """One DNS query over TCP; its answer's rcode ("" when none came)."""
    send_message(sock, DNSRecord.question(PROBE_NAME).pack())
    answer = recv_message(sock)
    try:
        return f"dns {RCODE.get(DNSRecord.parse(answer).header.rcode)}" if answer else ""
    except DNSError:
        return ""


def tcp_exchange(sock: socket.socket) -> str:
    """Ask a connected lab pod server (or the L7 proxy in front of it) as curl would; its answer:
    the first line of the response body ("ns/pod:port", or the proxy's "Access denied"), "" when
    the connection closed without one. Reads Content-Length bytes, not until the close: a proxy
    may hold the connection open a while after its answer."""
    sock.sendall(PROBE_REQUEST)
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        http = bool(sep) and head.startswith(b"HTTP/")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head) if http else None
        if length and len(body) >= int(length.group(1)):
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    text = (body if http else data).decode(errors="replace").strip()
    return text.splitlines()[0] if text else ""


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
                sock.send(udp_payload(port))
                return Attempt(bool(sock.recv(65535)), sport)
            if not exchange(sock, port):
                return Attempt(False, sport, "connection closed without a reply")
            return Attempt(True, sport)
        except OSError as err:
            return Attempt(False, sport, _describe(err))
    finally:
        sock.close()

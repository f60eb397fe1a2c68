"""DNS over TCP framing (RFC 1035 4.2.2): each message behind its two-byte length.

One reader and one writer for everything here that speaks DNS over TCP: the lab's kube-dns, the
nodes' DNS proxy (both sides) and the probes.
"""

from __future__ import annotations

import socket
import struct


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """`n` bytes, or None when the peer closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_message(sock: socket.socket) -> bytes | None:
    """The next message, or None when the peer closes (between messages or inside one)."""
    head = recv_exact(sock, 2)
    return None if head is None else recv_exact(sock, struct.unpack("!H", head)[0])


def send_message(sock: socket.socket, message: bytes) -> None:
    sock.sendall(struct.pack("!H", len(message)) + message)


__all__ = ["recv_exact", "recv_message", "send_message"]

"""The small server inside every lab pod: answers each declared containerPort, TCP and UDP.

TCP speaks HTTP/1.1, so the seed's curl checks work as written: every request gets `200 OK` with
the body `ns/pod:port` and, on a second line, the method and path it received (keep-alive,
pipelining and chunked or sized request bodies included; `Upgrade` gets `101` and then an echo
of the bytes). A client that sends nothing within BANNER_WAIT_S gets the line `ns/pod:port` and
the connection closes (like a banner: nc sees who answered).
UDP: echoes each datagram prefixed with `ns/pod:port ` back to its sender.
With `--dns-zone FILE` (the kube-dns pods), port 53 speaks DNS over UDP and TCP instead: A
queries for the zone's names (meshctl.lab.dnszone) get their addresses and TTL, other types of
those names an empty answer, unknown names NXDOMAIN. `--bind ADDR` listens on that address only
(the external hosts share one netns).
Run as `python -m meshctl.lab.server --cluster C --name ns/pod --tcp 80 --udp 53 [--ready-fd N]`
inside the pod netns; the cluster argument lets `lab down` recognise its own processes.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import threading
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

from meshctl.dnswire import recv_message, send_message
from meshctl.nodestate import DNS_PORT

BANNER_WAIT_S = 0.05
IDLE_S = 30.0
MAX_HEAD = 65536


class _Conn:
    """Buffered reads of one client connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def until(self, sep: bytes, limit: int = MAX_HEAD) -> bytes | None:
        while sep not in self.buf:
            if len(self.buf) > limit or not self.fill():
                return None
        line, _, self.buf = self.buf.partition(sep)
        return line

    def take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self.fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _body(conn: _Conn, headers: dict[str, str]) -> bool:
    """Read (and drop) the request body; False when the connection ended inside it."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = conn.until(b"\r\n")
            if size_line is None:
                return False
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if conn.take(size + 2) is None:
                return False
            if size == 0:
                return True
    length = int(headers.get("content-length", "0") or 0)
    return conn.take(length) is not None


def serve_http(sock: socket.socket, name: str, first: bytes) -> None:
    """Answer requests on one connection until the client closes or asks to."""
    conn = _Conn(sock)
    conn.buf = first
    sock.settimeout(IDLE_S)
    while True:
        head = conn.until(b"\r\n\r\n")
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if not _body(conn, headers):
            return
        if "upgrade" in headers:
            sock.sendall(f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         f"Upgrade: {headers['upgrade']}\r\n\r\n".encode())
            _echo(conn)
            return
        body = f"{name}\n{method} {target}\n".encode()
        close = headers.get("connection", "").lower() == "close" or (
            version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive")
        out = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
               f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n").encode()
        sock.sendall(out if method == "HEAD" else out + body)
        if close:
            return


def _echo(conn: _Conn) -> None:
    if conn.buf:
        conn.sock.sendall(conn.buf)
    while True:
        chunk = conn.sock.recv(65536)
        if not chunk:
            return
        conn.sock.sendall(chunk)


def _handle(sock: socket.socket, name: str) -> None:
    try:
        sock.settimeout(BANNER_WAIT_S)
        try:
            first = sock.recv(65536)
        except TimeoutError:
            sock.sendall(f"{name}\n".encode())
            sock.shutdown(socket.SHUT_WR)
            return
        if first:
            serve_http(sock, name, first)
    except (OSError, ValueError):
        pass
    finally:
        sock.close()


class Zone:
    """The zone file, read again whenever it changes (lab up rewrites it)."""

    def __init__(self, path: Path) -> None:
        self.path, self.stamp = path, 0
        self.names: dict[str, tuple[list[str], int]] = {}
        # answers by the query's bytes after its id: a resolver asked the same question again
        # (most of its traffic) answers without parsing; emptied when the zone changes
        self.answers: dict[bytes, bytes] = {}

    def answer(self, query: bytes) -> bytes:
        from meshctl.lab.dnszone import read

        stamp = self.path.stat().st_mtime_ns
        if stamp != self.stamp:
            self.names, self.stamp, self.answers = read(self.path), stamp, {}
        known = self.answers.get(query[2:])
        if known is None:
            if len(self.answers) >= 4096:
                self.answers.clear()
            known = self.answers[query[2:]] = self._answer(query)[2:]
        return query[:2] + known

    def _answer(self, query: bytes) -> bytes:
        request = DNSRecord.parse(query)
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        known = self.names.get(name)
        if known is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            addresses, ttl = known
            for address in addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
        return reply.pack()  # type: ignore[no-any-return]


def _dns_tcp(sock: socket.socket, zone: Zone) -> None:
    """DNS over TCP: as many queries as the client sends."""
    try:
        while (query := recv_message(sock)) is not None:
            send_message(sock, zone.answer(query))
    except (OSError, DNSError, ValueError):  # a malformed query ends its connection only
        return
    finally:
        sock.close()


def _listeners(tcp: list[int], udp: list[int], bind: str = "0.0.0.0") -> list[tuple[socket.socket, str, int]]:
    out = []
    for port in tcp:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind, port))
        s.listen(512)
        s.setblocking(False)
        out.append((s, "tcp", port))
    for port in udp:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((bind, port))
        s.setblocking(False)
        out.append((s, "udp", port))
    return out


def serve(name: str, tcp: list[int], udp: list[int], ready_fd: int | None, bind: str = "0.0.0.0",
          zone: Zone | None = None) -> None:
    sel = selectors.DefaultSelector()
    for sock, proto, port in _listeners(tcp, udp, bind):
        sel.register(sock, selectors.EVENT_READ, (proto, port))
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    print(f"{name}: serving tcp {tcp} udp {udp}", file=sys.stderr, flush=True)
    while True:
        for key, _ in sel.select():
            proto, port = key.data
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if proto == "tcp":
                try:
                    conn, _peer = sock.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                if zone is not None and port == DNS_PORT:
                    threading.Thread(target=_dns_tcp, args=(conn, zone), daemon=True).start()
                else:
                    threading.Thread(target=_handle, args=(conn, f"{name}:{port}"), daemon=True).start()
            else:
                try:
                    data, peer = sock.recvfrom(65535)
                    try:
                        if zone is not None and port == DNS_PORT:
                            sock.sendto(zone.answer(data), peer)
                            continue
                    except DNSError:
                        pass  # not DNS: echoed, as every other port is
                    sock.sendto(f"{name}:{port} ".encode() + data, peer)
                except (OSError, DNSError, ValueError):  # a bad datagram must not stop the server
                    pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="meshctl.lab.server")
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--dns-zone", type=Path)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.name, args.tcp, args.udp, args.ready_fd, args.bind,
          Zone(args.dns_zone) if args.dns_zone else None)


if __name__ == "__main__":
    main()

"""The small server inside every lab pod: answers each declared containerPort, TCP and UDP.

TCP: sends one line `ns/pod:port` and closes, so a client sees who answered (like curl).
UDP: echoes each datagram prefixed with `ns/pod:port ` back to its sender.
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


def _listeners(tcp: list[int], udp: list[int]) -> list[tuple[socket.socket, str, int]]:
    out = []
    for port in tcp:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(512)
        s.setblocking(False)
        out.append((s, "tcp", port))
    for port in udp:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        s.setblocking(False)
        out.append((s, "udp", port))
    return out


def serve(name: str, tcp: list[int], udp: list[int], ready_fd: int | None) -> None:
    sel = selectors.DefaultSelector()
    for sock, proto, port in _listeners(tcp, udp):
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
                try:
                    conn.setblocking(True)
                    conn.settimeout(1.0)
                    conn.sendall(f"{name}:{port}\n".encode())
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                finally:
                    conn.close()
            else:
                try:
                    data, peer = sock.recvfrom(65535)
                    sock.sendto(f"{name}:{port} ".encode() + data, peer)
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="meshctl.lab.server")
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--tcp", type=int, action="append", default=[])
    ap.add_argument("--udp", type=int, action="append", default=[])
    ap.add_argument("--ready-fd", type=int)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.name, args.tcp, args.udp, args.ready_fd)


if __name__ == "__main__":
    main()

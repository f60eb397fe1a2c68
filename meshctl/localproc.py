"""This host's own processes and unix sockets: who a pid is, and HTTP over a unix socket.

A pid is only ever signalled after its cmdline shows it is the process meant (pids get reused);
agents and Envoy serve HTTP on unix sockets that any netns of the host can reach.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


def cmdline(pid: int) -> list[str]:
    """The argv of a running process; [] when there is none (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_in_file(pid_file: Path, arg: str) -> int | None:
    """The pid `pid_file` names when that process runs with `arg` among its arguments (a proxy's
    config path): a stale file or a reused pid gives None."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return None
    return pid if arg in cmdline(pid) else None


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock

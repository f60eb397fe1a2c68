"""The wireguard-go device of a node: started inside the node netns, stopped by its pid.

A kernel without the WireGuard module (as the lab's may be) still runs it in user space: each
node runs `wireguard-go -f IFNAME` in its netns; the TUN lands in that netns, the UAPI socket in
the host-wide /var/run/wireguard.
The pid is recorded next to the node's keys; stop() signals that pid only after checking that
/proc/<pid>/cmdline is still our wireguard-go for that interface.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from meshctl.dataplane.wireguard.dump import Dump, parse_dump
from meshctl.dataplane.wireguard.names import uapi_socket
from meshctl.errors import DataplaneError

log = logging.getLogger(__name__)
PIDFILE = "wireguard-go.pid"


def _nsenter(netns: str | None, argv: list[str]) -> list[str]:
    if netns is None:
        return argv
    return ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]


def _ours(pid: int, ifname: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # Right after Popen the pid may still be nsenter, which then execs wireguard-go in place.
    return any(part.endswith(b"wireguard-go") for part in cmdline) and ifname.encode() in cmdline


def running_pid(ifname: str, state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / PIDFILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _ours(pid, ifname) else None


def exists(ifname: str) -> bool:
    return uapi_socket(ifname).exists()


def start(netns: str | None, ifname: str, state_dir: Path, timeout: float = 5.0) -> int:
    """Start wireguard-go for `ifname` in `netns` (idempotent); returns its pid."""
    pid = running_pid(ifname, state_dir)
    if pid is not None and exists(ifname):
        return pid
    if exists(ifname):
        # A socket without our process: a stale file (crash) would make wireguard-go refuse.
        probe = subprocess.run(["wg", "show", ifname, "listen-port"], capture_output=True, text=True)
        if probe.returncode == 0:
            raise DataplaneError("start wireguard-go", ifname, 17,
                                 "another process serves this interface (UAPI socket in use)")
        uapi_socket(ifname).unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logfile = open(state_dir / "wireguard-go.log", "ab")  # noqa: SIM115
    env = dict(os.environ, LOG_LEVEL="error")
    proc = subprocess.Popen(
        _nsenter(netns, ["wireguard-go", "-f", ifname]),
        stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, env=env, start_new_session=True,
    )
    logfile.close()
    # nsenter execs wireguard-go in place: the pid is wireguard-go's.
    (state_dir / PIDFILE).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while not exists(ifname):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(ifname, state_dir)
            raise DataplaneError("start wireguard-go", ifname, 0,
                                 f"no UAPI socket after {timeout}s (see {state_dir / 'wireguard-go.log'})")
        time.sleep(0.02)
    link_up(netns, ifname)
    log.info("started wireguard-go %s (pid %d) in %s", ifname, proc.pid, netns)
    return proc.pid


def link_up(netns: str | None, ifname: str) -> None:
    """Set the TUN up through netlink; a failure says which device and errno."""
    from pyroute2 import IPRoute  # ~150 ms to import: only when a device starts
    from pyroute2.netlink.exceptions import NetlinkError

    from meshctl.dataplane.netns import in_netns

    try:
        with in_netns(netns), IPRoute() as ipr:
            index = ipr.link_lookup(ifname=ifname)
            if not index:
                raise DataplaneError("set up", ifname, errno.ENODEV)
            ipr.link("set", index=index[0], state="up")
    except NetlinkError as err:
        raise DataplaneError("set up", ifname, err.code) from None


def stop(ifname: str, state_dir: Path, timeout: float = 5.0) -> None:
    """Stop our wireguard-go for `ifname` by its recorded pid; the TUN goes with it."""
    pid = running_pid(ifname, state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _ours(pid, ifname) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)
        if _ours(pid, ifname):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    (state_dir / PIDFILE).unlink(missing_ok=True)
    if pid is not None:
        uapi_socket(ifname).unlink(missing_ok=True)


def wg(*args: str) -> str:
    """Run `wg` (talks to the UAPI socket, no netns needed); output is never logged."""
    proc = subprocess.run(["wg", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        what = " ".join(a for a in args[:3])
        raise DataplaneError(f"wg {what}", args[1] if len(args) > 1 else "", 0, proc.stderr.strip())
    return proc.stdout


def show(ifname: str) -> Dump | None:
    """The live interface, or None when it does not exist."""
    if not exists(ifname):
        return None
    proc = subprocess.run(["wg", "show", ifname, "dump"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return parse_dump(proc.stdout, ifname)

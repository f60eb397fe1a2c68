"""Entering a network namespace without losing /sys/fs/bpf, and running `ip` inside one.

`ip netns exec` remounts /sys and hides the BPF pins; setns(2) on the calling thread (or
`nsenter --net=...` for a child process) does not. A socket keeps the netns it was created in,
so a probe creates its socket inside the pod netns and then returns to its own.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from meshctl.errors import LabError
from meshctl.lab.names import NETNS_DIR

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return netns_path(name).exists()


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns into {what}: {os.strerror(err)}")


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with this thread in netns `name`; always come back."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(netns_path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise LabError(f"network namespace {name} does not exist (is the lab up?)") from None
        try:
            _setns(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "the original network namespace")
    finally:
        os.close(own)


def nsenter_argv(name: str, argv: Sequence[str]) -> list[str]:
    """argv that runs a command in netns `name` with the host's /sys (pins visible)."""
    return ["nsenter", f"--net={netns_path(name)}", "--", *argv]


def ip_batch(name: str | None, commands: Sequence[str], force: bool = False) -> None:
    """Run many `ip` commands in one process (in netns `name`, or the root netns for None)."""
    if not commands:
        return
    argv = ["ip"] + (["-n", name] if name else []) + (["-force"] if force else []) + ["-batch", "-"]
    proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
    if proc.returncode != 0 and not force:
        raise LabError(f"ip in {name or 'root netns'} failed: {proc.stderr.strip()}")


def ip(name: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip"] + (["-n", name] if name else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc


def sysctl(name: str, settings: dict[str, str]) -> None:
    """Write /proc/sys values as seen from inside netns `name` (per-netns net.* sysctls)."""
    with entered(name):
        for key, value in settings.items():
            # net.* sysctls resolve against the netns of the thread that opens them.
            (Path("/proc/sys") / key.replace(".", "/")).write_text(value)

"""Enter a node's network namespace and attach tc programs there as pinned tcx links.

`ip netns exec` remounts /sys, hiding /sys/fs/bpf pins; setns() on the calling thread keeps
them visible. Attachments are tcx links (kernel 6.6+, raw BPF_LINK_CREATE through
libbpf's bpf_link_create, since libbpf 1.1.2 predates bpf_program__attach_tcx): a pinned link
keeps the program attached after meshctl exits, and unpinning + detaching removes it.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from meshctl.dataplane.libbpf import BPF_TCX_EGRESS, BPF_TCX_INGRESS, Link
from meshctl.errors import DataplaneError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")

# hook name (nodestate.Attachment.hook) -> tcx attach type on the node-side veth
HOOKS: dict[str, int] = {"from-pod": BPF_TCX_INGRESS, "to-pod": BPF_TCX_EGRESS}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise DataplaneError("enter network namespace", what, ctypes.get_errno())


def netns_path(name: str) -> Path:
    return NETNS_RUN_DIR / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


@contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the body in network namespace `name` (this thread only); None = stay where we are."""
    if name is None:
        yield
        return
    try:
        target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataplaneError("enter network namespace", name, errno_mod.ENOENT) from None
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, name)
        try:
            yield
        finally:
            _setns(orig, "original")
    finally:
        os.close(target)
        os.close(orig)


def ifindex(ifname: str) -> int | None:
    """Index of a device in the current netns, None when it does not exist."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def device_indexes() -> dict[str, int]:
    """name -> index of every device of the current netns, in one call (not one per device)."""
    return {name: index for index, name in socket.if_nameindex()}


def attach_tcx(prog_fd: int, ifname: str, hook: str) -> Link:
    """Attach a program at the tcx hook of `ifname` in the current netns; returns the link."""
    index = ifindex(ifname)
    if index is None:
        raise DataplaneError("attach to", f"device {ifname}", errno_mod.ENODEV)
    return Link.create(prog_fd, index, HOOKS[hook], label=f"{hook} program on {ifname}")


@contextmanager
def netlink(netns: str | None, op: str) -> Iterator[Any]:
    """An IPRoute socket in `netns`; netlink errors become DataplaneError naming `op`."""
    from pyroute2 import IPRoute  # ~150 ms to import: only where netlink is needed
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with in_netns(netns), IPRoute() as ipr:
            yield ipr
    except NetlinkError as err:
        raise DataplaneError(op, netns or "root netns", err.code) from None


def host_routes(netns: str | None) -> dict[IPv4Address, str]:
    """/32 routes of the main table in `netns`: pod IP -> node-side device (the pod's veth)."""
    from pyroute2 import IPRoute  # costs ~150 ms: only when attachments must be resolved

    out: dict[IPv4Address, str] = {}
    with in_netns(netns), IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.route("dump", family=socket.AF_INET, table=254):
            dst, oif = route.get_attr("RTA_DST"), route.get_attr("RTA_OIF")
            if route["dst_len"] == 32 and dst and oif in names:
                out[IPv4Address(dst)] = names[oif]
    return out

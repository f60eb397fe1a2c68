"""The raw facts read from one node's kernel state: bytes and ids, no interpretation."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from meshctl.observe.programs import RawHook

Items = list[tuple[bytes, bytes]]
Dump = tuple[bytes, bytes]  # every key concatenated, every value concatenated


@dataclass(frozen=True)
class RawLink:
    """One pinned attachment: what the pin name says and what the kernel says about it."""

    ifname: str
    hook: str
    endpoint: IPv4Address
    prog_id: int  # program the link runs
    link_ifindex: int  # device the link is on; 0 once the device is gone
    attach_type: int
    device_ifindex: int | None  # index of `ifname` in the node netns now; None = no such device


@dataclass(frozen=True)
class RawNode:
    """Everything observe reads from one node; `loaded` is False when no pin dir exists."""

    node: str
    loaded: bool = False
    build: str | None = None  # build hash recorded at load
    prog_ids: dict[str, int] = field(default_factory=dict)  # hook -> pinned program id
    config: bytes | None = None
    ipcache: Items = field(default_factory=list)
    endpoints: Items = field(default_factory=list)
    # endpoint_id -> inner entries: pairs, or one (keys, values) batch dump (shared by endpoints
    # whose outer entries name the same inner map)
    policies: dict[int, Items | Dump] = field(default_factory=dict)
    links: list[RawLink] = field(default_factory=list)
    lb: Any = None  # meshctl.dataplane.lb_maps.RawLb, None when the object has no LB maps
    hooks: list[RawHook] = field(default_factory=list)  # every program on meshctl's interfaces
    our_programs: frozenset[int] = frozenset()  # ids of the programs meshctl attached there

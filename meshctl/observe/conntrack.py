"""A node's live connections from its pinned conntrack map: `read` (kernel) and `parse` (pure).

Runtime state, not intent: the result never enters NodeState, its fingerprint or the diff. The
map is read in one batch dump (about 1 us per entry) and parsed with struct.iter_unpack into
named tuples (about 1 us per entry more).

Sentinels: a node with no datapath (or no `ct` pin) reads as None and parses as no connections.
An entry counts as established when it is live (expires_ns after the read's clock) and, for
TCP, has seen a reply and no FIN/RST (a half-open or closing connection is not one a change
"cuts"); UDP and ICMP entries count while live.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshctl.connections import TrackedConnection
from meshctl.nodestate import PROTO_TCP, Direction

if TYPE_CHECKING:
    from meshctl.dataplane.node import NodeDatapath

CT_MAP = "ct"
# struct ct_key (bpf/lib/common.h): addresses and ports in network order, then protocol,
# direction and two pad bytes. struct ct_value: expires_ns, packets, bytes (u64), cookie, flags
# (u32), host order; newer layouts append fields, so only this prefix is read.
KEY = struct.Struct("!IIHHBB2x")
VALUE_PREFIX = struct.Struct("=QQQII")
CT_F_SEEN_REPLY = 1 << 0
CT_F_CLOSING = 1 << 1


@dataclass(frozen=True)
class RawConntrack:
    """The `ct` map as dumped: every key and every value concatenated, and the clock then."""

    keys: bytes
    values: bytes
    key_size: int
    value_size: int
    now_ns: int  # CLOCK_MONOTONIC at the read: the clock of bpf_ktime_get_ns


def read_conntrack(dp: NodeDatapath) -> RawConntrack | None:
    """One batch dump of the node's pinned `ct` map; None when the node has none."""
    from meshctl.dataplane.libbpf import Map

    path = dp.map_pin(CT_MAP)
    if not path.exists():
        return None
    with Map.from_pin(path) as m:
        now = time.monotonic_ns()
        keys, values = m.dump()
        return RawConntrack(keys, values, m.key_size, m.value_size, now)


def parse_conntrack(raw: RawConntrack | None) -> tuple[TrackedConnection, ...]:
    """The established connections of a dump (see the module doc for what counts)."""
    if raw is None or raw.key_size != KEY.size or raw.value_size < VALUE_PREFIX.size:
        return ()
    count = len(raw.keys) // raw.key_size
    if count * raw.value_size != len(raw.values):
        return ()
    now = raw.now_ns
    value = struct.Struct(f"{VALUE_PREFIX.format}{raw.value_size - VALUE_PREFIX.size}x")
    dirs = (Direction.INGRESS, Direction.EGRESS)
    make = TrackedConnection._make
    tcp_state = CT_F_CLOSING | CT_F_SEEN_REPLY  # established TCP: a reply seen, no FIN/RST
    return tuple(
        make((*key[:5], dirs[key[5]]))
        for key, (expires, _packets, _bytes, _cookie, flags) in zip(
            KEY.iter_unpack(raw.keys), value.iter_unpack(raw.values), strict=True)
        if expires > now and key[5] <= 1 and (key[4] != PROTO_TCP or flags & tcp_state == CT_F_SEEN_REPLY)
    )


def observe_connections(cluster: str, node: str, netns: str | None) -> tuple[TrackedConnection, ...]:
    """The node's established connections, read from its pinned conntrack map now."""
    from meshctl.dataplane.node import NodeDatapath

    return parse_conntrack(read_conntrack(NodeDatapath(cluster, node, netns)))

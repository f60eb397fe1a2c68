"""meshctl.observe.conntrack.parse_conntrack: which raw ct entries are established connections."""

from __future__ import annotations

import ctypes
import socket
import sys
from ipaddress import IPv4Address

from meshctl.connections import TrackedConnection
from meshctl.dataplane.structs import CtKey, CtValue
from meshctl.nodestate import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Direction
from meshctl.observe.conntrack import RawConntrack, parse_conntrack

NOW = 1_000_000_000_000
SEEN_REPLY, CLOSING = 1, 2
A, B = "10.0.1.1", "10.0.1.2"


def entry(sport: int, proto: int = PROTO_TCP, flags: int = SEEN_REPLY, expires: int = NOW + 1,
          direction: Direction = Direction.EGRESS) -> tuple[bytes, bytes]:
    key = CtKey(saddr_be=int.from_bytes(IPv4Address(A).packed, sys.byteorder),
                daddr_be=int.from_bytes(IPv4Address(B).packed, sys.byteorder),
                sport_be=socket.htons(sport), dport_be=socket.htons(80), protocol=proto,
                direction=int(direction))
    value = CtValue(expires_ns=expires, packets=3, bytes=180, cookie=7, flags=flags, policy_rev=4)
    return bytes(key), bytes(value)


def raw(*entries: tuple[bytes, bytes], value_size: int = ctypes.sizeof(CtValue)) -> RawConntrack:
    return RawConntrack(b"".join(k for k, _ in entries), b"".join(v[:value_size] for _, v in entries),
                        ctypes.sizeof(CtKey), value_size, NOW)


def test_only_live_established_entries_count() -> None:
    conns = parse_conntrack(raw(
        entry(1000),                                   # established TCP
        entry(1001, flags=0),                          # SYN only: half open
        entry(1002, flags=SEEN_REPLY | CLOSING),       # FIN/RST seen
        entry(1003, expires=NOW),                      # expired
        entry(1004, proto=PROTO_UDP, flags=0),         # UDP counts while live
        entry(1005, proto=PROTO_ICMP, flags=0, direction=Direction.INGRESS),
    ))
    assert [(c.sport, c.protocol, c.direction) for c in conns] == [
        (1000, PROTO_TCP, Direction.EGRESS), (1004, PROTO_UDP, Direction.EGRESS),
        (1005, PROTO_ICMP, Direction.INGRESS)]
    first = conns[0]
    assert (first.local, first.peer) == (IPv4Address(A), IPv4Address(B))
    assert (first.dport, first.policy_port) == (80, 80)
    assert conns[2].local == IPv4Address(B) and conns[2].policy_port == 8  # ICMP: echo request type
    assert TrackedConnection.from_json(first.to_json()) == first


def test_older_value_layout_and_odd_dumps() -> None:
    assert [c.sport for c in parse_conntrack(raw(entry(1000), value_size=32))] == [1000]  # before policy_rev
    assert parse_conntrack(None) == ()
    k, v = entry(1000)
    assert parse_conntrack(RawConntrack(k, v[:-1], len(k), len(v), NOW)) == ()  # truncated values
    assert parse_conntrack(RawConntrack(k + k, v + v, len(k) + 1, len(v), NOW)) == ()  # unknown key layout

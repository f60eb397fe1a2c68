"""A live tracked connection of a node, as plain data (runtime state, never part of NodeState).

The datapath keeps one conntrack entry per connection and endpoint side: the direction in which
that node's endpoint first saw it (egress at the client's node, ingress at the server's). The
plan reads them to say which established connections a change will cut (meshctl.plan.cuts);
observe reads them from the kernel (meshctl.observe.conntrack), agents send them as JSON rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any, NamedTuple

from meshctl.nodestate import PROTO_ICMP, Direction

ICMP_ECHO_REQUEST = 8  # the datapath's policy port of an ICMP echo flow is the request's type


class TrackedConnection(NamedTuple):
    """One live, established conntrack entry: the forward 5-tuple and the judging side.

    A named tuple, not a dataclass: a node may hold 262,144 of them and they are made in bulk."""

    saddr: int  # IPv4 as int (host order): big tables stay cheap
    daddr: int
    sport: int
    dport: int
    protocol: int
    direction: Direction  # the side that judges its forward packets: egress at saddr, ingress at daddr

    @property
    def local(self) -> IPv4Address:
        """The endpoint of this node that owns the entry."""
        return IPv4Address(self.saddr if self.direction == Direction.EGRESS else self.daddr)

    @property
    def peer(self) -> IPv4Address:
        return IPv4Address(self.daddr if self.direction == Direction.EGRESS else self.saddr)

    @property
    def policy_port(self) -> int:
        """The port the datapath's policy lookup uses (ICMP: the echo request's type)."""
        return ICMP_ECHO_REQUEST if self.protocol == PROTO_ICMP else self.dport

    @property
    def five_tuple(self) -> tuple[int, int, int, int, int]:
        """The connection, whichever node's entry it comes from."""
        return self[:5]  # type: ignore[return-value]

    def to_json(self) -> list[int]:
        return [self.saddr, self.daddr, self.sport, self.dport, self.protocol, int(self.direction)]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> TrackedConnection:
        s, d, sp, dp, proto, direction = (int(x) for x in row)
        return cls(s, d, sp, dp, proto, Direction(direction))

"""What the datapath decides for a packet, computed from NodeState alone.

Emulates bpf/lib/policy.h exactly: look the endpoint up, skip when the direction is not
enforced, then two longest-prefix lookups in its policy map (peer identity, identity 0); a deny
from either wins, else an identity-specific allow, else a wildcard allow, else default deny.
The plan uses it to show connectivity impact; trace and the tests use it to check the compiler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from meshctl.nodestate import (
    PROTO_ANY,
    Direction,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
    ReservedIdentity,
)

REASONS = ("allowed", "not-enforced", "default-deny", "explicit-deny", "no-endpoint")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str  # one of REASONS
    cookie: int = 0


@dataclass(frozen=True)
class ConnectionVerdict:
    egress: Verdict | None  # None: the source is not a local endpoint on any node
    ingress: Verdict | None  # None: the destination is not a local endpoint on any node
    allowed: bool


def lpm_lookup(
    entries: Mapping[PolicyKey, PolicyEntry], direction: Direction, identity: int, protocol: int, port: int
) -> tuple[PolicyKey, PolicyEntry] | None:
    """The longest matching entry for one identity: port prefixes, then protocol, then any."""
    d = Direction(direction)
    if protocol != PROTO_ANY:
        for plen in range(16, -1, -1):
            masked = port & ~((1 << (16 - plen)) - 1) & 0xFFFF
            key = PolicyKey(d, identity, protocol, masked, plen)
            hit = entries.get(key)
            if hit is not None:
                return key, hit
    key = PolicyKey(d, identity, PROTO_ANY, 0, 0)
    hit = entries.get(key)
    return (key, hit) if hit is not None else None


def policy_verdict(
    state: NodeState, endpoint_ip: IPv4Address, direction: Direction, peer_identity: int, protocol: int,
    port: int,
) -> Verdict:
    ep = state.endpoints.get(IPv4Address(endpoint_ip))
    if ep is None:
        return Verdict(False, "no-endpoint")
    enforced = ep.enforce_ingress if direction == Direction.INGRESS else ep.enforce_egress
    if not enforced:
        return Verdict(True, "not-enforced")
    entries = state.policies.get(ep.endpoint_id, FrozenMap())
    specific = lpm_lookup(entries, direction, peer_identity, protocol, port) if peer_identity else None
    wildcard = lpm_lookup(entries, direction, ReservedIdentity.ANY, protocol, port)
    for hit in (specific, wildcard):
        if hit is not None and hit[1].deny:
            return Verdict(False, "explicit-deny", hit[1].cookie)
    for hit in (specific, wildcard):
        if hit is not None:
            return Verdict(True, "allowed", hit[1].cookie)
    return Verdict(False, "default-deny")


def ipcache_lookup(ipcache: Mapping[IPv4Network, IpcacheEntry], addr: IPv4Address) -> int:
    """Longest-prefix identity of an address; a miss is world."""
    value = int(addr)
    lengths = _prefix_lengths(ipcache)
    for plen in lengths:
        net = IPv4Network((value & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF, plen))
        hit = ipcache.get(net)
        if hit is not None:
            return hit.identity
    return ReservedIdentity.WORLD


# id(ipcache) -> (the ipcache itself, kept alive so the id cannot be reused; its prefix lengths)
_LENGTHS: dict[int, tuple[object, tuple[int, ...]]] = {}


def _prefix_lengths(ipcache: Mapping[IPv4Network, IpcacheEntry]) -> tuple[int, ...]:
    cached = _LENGTHS.get(id(ipcache))
    if cached is not None and cached[0] is ipcache:
        return cached[1]
    lengths = tuple(sorted({n.prefixlen for n in ipcache}, reverse=True))
    if len(_LENGTHS) > 64:
        _LENGTHS.clear()
    _LENGTHS[id(ipcache)] = (ipcache, lengths)
    return lengths


def find_endpoint(states: Mapping[str, NodeState], addr: IPv4Address) -> str | None:
    for node, state in states.items():
        if addr in state.endpoints:
            return node
    return None


def connection_verdict(
    states: Mapping[str, NodeState], src_ip: IPv4Address, dst_ip: IPv4Address, protocol: int, port: int
) -> ConnectionVerdict:
    """Egress at the source's node, ingress at the destination's node (identities from ipcache)."""
    src_ip, dst_ip = IPv4Address(src_ip), IPv4Address(dst_ip)
    egress = ingress = None
    src_node = find_endpoint(states, src_ip)
    if src_node is not None:
        st = states[src_node]
        egress = policy_verdict(st, src_ip, Direction.EGRESS, ipcache_lookup(st.ipcache, dst_ip), protocol, port)
    dst_node = find_endpoint(states, dst_ip)
    if dst_node is not None:
        st = states[dst_node]
        ingress = policy_verdict(st, dst_ip, Direction.INGRESS, ipcache_lookup(st.ipcache, src_ip), protocol, port)
    allowed = (egress is None or egress.allowed) and (ingress is None or ingress.allowed)
    return ConnectionVerdict(egress, ingress, allowed)

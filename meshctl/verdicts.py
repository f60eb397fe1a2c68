"""What the datapath decides for a packet, computed from NodeState alone.

Emulates bpf/lib/policy.h exactly: look the endpoint up, skip when the direction is not
enforced, then two longest-prefix lookups in its policy map (peer identity, identity 0); a deny
from either wins, else an identity-specific allow, else a wildcard allow, else default deny.
With staged policies it also computes the AUDIT verdict (staged_verdict, audit_event).
The plan uses it to show connectivity impact; trace and the tests use it to check the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TypeVar

from meshctl.nodestate import (
    PROTO_ANY,
    Direction,
    EndpointEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
    ReservedIdentity,
    audit_map_id,
)

T = TypeVar("T")
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


class _Memo:
    """Per-object derived indexes, keyed by id() and holding the object so the id stays unique."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[object, object]] = {}

    def get(self, obj: object, build: Callable[[], T]) -> T:
        hit = self._items.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]  # type: ignore[return-value]
        value = build()
        if len(self._items) > 4096:
            self._items.clear()
        self._items[id(obj)] = (obj, value)
        return value


_POLICY_INDEX = _Memo()
_IPCACHE_INDEX = _Memo()
_ENDPOINT_INDEX = _Memo()
_ATTACHMENT_INDEX = _Memo()

# (direction, identity, protocol) -> [(port, port_prefix, key, entry)] longest prefix first
_PolicyIndex = dict[tuple[int, int, int], list[tuple[int, int, PolicyKey, PolicyEntry]]]


def _index_policy(entries: Mapping[PolicyKey, PolicyEntry]) -> _PolicyIndex:
    index: _PolicyIndex = {}
    for key, entry in entries.items():
        index.setdefault((int(key.direction), key.identity, key.protocol), []).append(
            (key.port, key.port_prefix, key, entry)
        )
    for bucket in index.values():
        bucket.sort(key=lambda t: -t[1])
    return index


def lpm_lookup(
    entries: Mapping[PolicyKey, PolicyEntry], direction: Direction, identity: int, protocol: int, port: int
) -> tuple[PolicyKey, PolicyEntry] | None:
    """The longest matching entry for one identity: port prefixes, then protocol, then any."""
    index = _POLICY_INDEX.get(entries, lambda: _index_policy(entries))
    if protocol != PROTO_ANY:
        for kport, plen, key, entry in index.get((int(direction), identity, protocol), ()):
            if (port ^ kport) >> (16 - plen) == 0:
                return key, entry
    for _, _, key, entry in index.get((int(direction), identity, PROTO_ANY), ()):
        return key, entry
    return None


def policy_verdict(
    state: NodeState,
    endpoint_ip: IPv4Address,
    direction: Direction,
    peer_identity: int,
    protocol: int,
    port: int,
) -> Verdict:
    ep = _endpoint_index(state).get(int(_addr(endpoint_ip)))
    if ep is None:
        return Verdict(False, "no-endpoint")
    return _endpoint_verdict(state, ep, direction, peer_identity, protocol, port)


def _endpoint_verdict(
    state: NodeState, ep: EndpointEntry, direction: Direction, peer_identity: int, protocol: int, port: int
) -> Verdict:
    if not ep.enforces(direction):
        return Verdict(True, "not-enforced")
    return _map_verdict(state.policies.get(ep.endpoint_id, _EMPTY), direction, peer_identity, protocol, port)


def staged_verdict(
    state: NodeState,
    endpoint_ip: IPv4Address,
    direction: Direction,
    peer_identity: int,
    protocol: int,
    port: int,
) -> Verdict | None:
    """The verdict with the staged policies counted, when the endpoint audits this direction."""
    ep = _endpoint_index(state).get(int(_addr(endpoint_ip)))
    if ep is None or not ep.audits(direction):
        return None
    entries = state.policies.get(audit_map_id(ep.endpoint_id), _EMPTY)
    return _map_verdict(entries, direction, peer_identity, protocol, port)


def audit_event(enforced: Verdict, staged: Verdict | None) -> Verdict | None:
    """The AUDIT flow the datapath reports for a new connection: the staged verdict, when it
    differs from the enforced one (would drop, or would newly allow)."""
    if staged is None or staged.allowed == enforced.allowed:
        return None
    return staged


def _map_verdict(
    entries: Mapping[PolicyKey, PolicyEntry],
    direction: Direction,
    peer_identity: int,
    protocol: int,
    port: int,
) -> Verdict:
    specific = lpm_lookup(entries, direction, peer_identity, protocol, port) if peer_identity else None
    wildcard = lpm_lookup(entries, direction, ReservedIdentity.ANY, protocol, port)
    for hit in (specific, wildcard):
        if hit is not None and hit[1].deny:
            return Verdict(False, "explicit-deny", hit[1].cookie)
    for hit in (specific, wildcard):
        if hit is not None:
            return Verdict(True, "allowed", hit[1].cookie)
    return Verdict(False, "default-deny")


_EMPTY: FrozenMap[PolicyKey, PolicyEntry] = FrozenMap()


def _endpoint_index(state: NodeState) -> dict[int, EndpointEntry]:
    """A node's endpoints by integer address (IPv4Address hashing is slow in bulk)."""
    return _ENDPOINT_INDEX.get(state.endpoints, lambda: {int(a): e for a, e in state.endpoints.items()})


def _index_ipcache(
    ipcache: Mapping[IPv4Network, IpcacheEntry],
) -> tuple[tuple[int, ...], dict[tuple[int, int], int]]:
    table = {(int(n.network_address), n.prefixlen): e.identity for n, e in ipcache.items()}
    return tuple(sorted({plen for _, plen in table}, reverse=True)), table


def ipcache_lookup(ipcache: Mapping[IPv4Network, IpcacheEntry], addr: IPv4Address) -> int:
    """Longest-prefix identity of an address; a miss is world."""
    lengths, table = _IPCACHE_INDEX.get(ipcache, lambda: _index_ipcache(ipcache))
    value = int(addr)
    for plen in lengths:
        hit = table.get(((value >> (32 - plen)) << (32 - plen) if plen else 0, plen))
        if hit is not None:
            return hit
    return ReservedIdentity.WORLD


def _addr(value: IPv4Address | str | int) -> IPv4Address:
    return value if isinstance(value, IPv4Address) else IPv4Address(value)


def find_endpoint(states: Mapping[str, NodeState], addr: IPv4Address) -> str | None:
    value = int(_addr(addr))
    for node, state in states.items():
        if value in _endpoint_index(state):
            return node
    return None


def _attached(states: Mapping[str, NodeState], value: int, hook: str) -> bool:
    """A program is attached for this address but it has no endpoint entry: packets drop."""
    for state in states.values():
        hooks = _ATTACHMENT_INDEX.get(
            state.attachments, lambda st=state: {(int(a.endpoint), a.hook) for a in st.attachments}
        )
        if (value, hook) in hooks:
            return True
    return False


def _local(states: Mapping[str, NodeState], value: int) -> tuple[NodeState, EndpointEntry] | None:
    for state in states.values():
        ep = _endpoint_index(state).get(value)
        if ep is not None:
            return state, ep
    return None


def staged_connection_verdict(
    states: Mapping[str, NodeState], src_ip: IPv4Address, dst_ip: IPv4Address, protocol: int, port: int
) -> ConnectionVerdict:
    """connection_verdict once the staged policies are enforced: each side that audits judges
    with its enforced+staged map (what the AUDIT events report)."""
    return connection_verdict(states, src_ip, dst_ip, protocol, port, staged=True)


def connection_verdict(
    states: Mapping[str, NodeState],
    src_ip: IPv4Address,
    dst_ip: IPv4Address,
    protocol: int,
    port: int,
    staged: bool = False,
) -> ConnectionVerdict:
    """Egress at the source's node, ingress at the destination's node (identities from ipcache)."""
    src_ip, dst_ip = _addr(src_ip), _addr(dst_ip)
    egress = ingress = None
    src = _local(states, int(src_ip))
    if src is not None:
        st, ep = src
        peer = ipcache_lookup(st.ipcache, dst_ip)
        egress = _side_verdict(st, ep, Direction.EGRESS, peer, protocol, port, staged)
    elif _attached(states, int(src_ip), "from-pod"):
        egress = Verdict(False, "no-endpoint")  # the datapath fails closed
    dst = _local(states, int(dst_ip))
    if dst is not None:
        st, ep = dst
        peer = ipcache_lookup(st.ipcache, src_ip)
        ingress = _side_verdict(st, ep, Direction.INGRESS, peer, protocol, port, staged)
    elif _attached(states, int(dst_ip), "to-pod"):
        ingress = Verdict(False, "no-endpoint")
    allowed = (egress is None or egress.allowed) and (ingress is None or ingress.allowed)
    return ConnectionVerdict(egress, ingress, allowed)


def _side_verdict(
    state: NodeState,
    ep: EndpointEntry,
    direction: Direction,
    peer: int,
    protocol: int,
    port: int,
    staged: bool,
) -> Verdict:
    if staged and ep.audits(direction):
        entries = state.policies.get(audit_map_id(ep.endpoint_id), _EMPTY)
        return _map_verdict(entries, direction, peer, protocol, port)
    return _endpoint_verdict(state, ep, direction, peer, protocol, port)

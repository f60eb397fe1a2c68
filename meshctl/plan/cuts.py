"""Which established connections a plan cuts, and which of its changes cut them.

The datapath judges every forward packet of a tracked connection again once a change is applied
(bpf/datapath.c: the policy revision), so a live connection whose side is allowed by the
observed state and dropped by the intended one stops at apply. For each live conntrack entry of
a node with changes, that side is judged twice with the datapath emulation of meshctl.verdicts
(endpoint enforcement, policy map, the peer's identity from that state's ipcache). A connection
is cut when any of its sides is; the changes responsible are those that touch what decided,
the most specific first: the allow entry that let it through or the deny entry that now matches
(and the peer's ipcache prefix when its identity changes); else the endpoint (newly enforced,
new identity, replaced); else its policy map. Connections of a
pod that leaves the node entirely (no endpoint and no program in the intended state) are not
counted: the plan already says the pod goes. Pure: connections come in as data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from meshctl.catalog import Catalog
from meshctl.connections import TrackedConnection
from meshctl.nodestate import PROTOCOL_NAMES, Direction, NodeState, ReservedIdentity
from meshctl.plan import codec
from meshctl.plan.change import Change, ChangeKind
from meshctl.plan.model import CutRow
from meshctl.plan.names import Namer
from meshctl.verdicts import ipcache_lookup, lpm_lookup, policy_verdict

# Kinds whose changes can alter a side's verdict (config, attachments, WireGuard and LB cannot).
VERDICT_KINDS = frozenset({ChangeKind.IPCACHE, ChangeKind.ENDPOINT, ChangeKind.POLICY_MAP, ChangeKind.POLICY})

WORLD_NAME = "world"
_UNJUDGED: list[str] = []  # sentinel of the per-side memo (None means "not cut")


def nodes_to_read(changes: Mapping[str, Sequence[Change]]) -> list[str]:
    """Nodes whose conntrack is worth reading: only a node's own changes cut its entries."""
    return sorted(n for n, cs in changes.items() if any(c.kind in VERDICT_KINDS for c in cs))


@dataclass(frozen=True)
class _Side:
    """One judged side of a connection on its node: direction, local endpoint, peer, protocol and
    the port the policy lookup uses."""

    direction: Direction
    local: IPv4Address
    peer: IPv4Address
    protocol: int
    port: int


def established_cuts(
    observed: Mapping[str, NodeState],
    intended: Mapping[str, NodeState],
    changes: Mapping[str, Sequence[Change]],
    connections: Mapping[str, Sequence[TrackedConnection]],
    catalog: Catalog,
    pod_names: Mapping[IPv4Address, str] | None = None,
) -> list[CutRow]:
    """Cut connections grouped by (source, destination, protocol, port), biggest groups first.

    `changes` are each node's planned changes (the rows name their addresses), `pod_names` maps
    pod IPs to "ns/pod" (other addresses are named from the endpoints or the ipcache)."""
    names = dict(pod_names or {})
    cut: dict[tuple[int, int, int, int, int], tuple[TrackedConnection, list[str]]] = {}
    for node in nodes_to_read(changes):
        conns = connections.get(node, ())
        if not conns:
            continue
        before = observed.get(node) or NodeState(node)
        after = intended.get(node) or NodeState(node)
        judged: dict[tuple[int, int, int, int, int], list[str] | None] = {}
        for conn in conns:  # many connections share a side (only the client port differs)
            saddr, daddr, _sport, _dport, proto, direction = conn
            egress = direction == Direction.EGRESS
            port = conn.policy_port
            key = (direction, saddr if egress else daddr, daddr if egress else saddr, proto, port)
            by = judged.get(key, _UNJUDGED)
            if by is _UNJUDGED:
                side = _Side(conn.direction, IPv4Address(key[1]), IPv4Address(key[2]), proto, port)
                by = judged[key] = _judge(side, before, after, changes[node])
            if by is None:
                continue
            hit = cut.setdefault(conn.five_tuple, (conn, []))
            hit[1].extend(a for a in by if a not in hit[1])
    return _group(cut.values(), observed, intended, catalog, names)


def _judge(side: _Side, before: NodeState, after: NodeState, changes: Sequence[Change]) -> list[str] | None:
    """The addresses of the changes that cut this side, or None when it is not cut."""
    peer_before = ipcache_lookup(before.ipcache, side.peer)
    was = policy_verdict(before, side.local, side.direction, peer_before, side.protocol, side.port)
    if not was.allowed:
        return None  # already dropped today: nothing to cut
    peer_after = ipcache_lookup(after.ipcache, side.peer)
    now = policy_verdict(after, side.local, side.direction, peer_after, side.protocol, side.port)
    if now.allowed:
        return None
    if now.reason == "no-endpoint" and not any(a.endpoint == side.local for a in after.attachments):
        return None  # the pod leaves the node: no program judges its packets any more
    keys = _deciding_keys(side, before, after, peer_before, peer_after)
    deciding = [c for c in changes if c.kind in VERDICT_KINDS and (c.kind, _hashable(c.key)) in keys]
    for tier in _TIERS:  # the most specific changes: entries and peers, then the endpoint, then its map
        named = [c.address for c in deciding if c.kind in tier]
        if named:
            return named
    return []


_TIERS = (
    frozenset({ChangeKind.POLICY, ChangeKind.IPCACHE}),
    frozenset({ChangeKind.ENDPOINT}),
    frozenset({ChangeKind.POLICY_MAP}),
)


def _deciding_keys(
    side: _Side, before: NodeState, after: NodeState, peer_before: int, peer_after: int
) -> set[tuple[ChangeKind, Any]]:
    """(kind, change key) of everything that decided the old or the new verdict of a side."""
    keys: set[tuple[ChangeKind, Any]] = {(ChangeKind.ENDPOINT, str(side.local))}
    for state, peer in ((before, peer_before), (after, peer_after)):
        ep = state.endpoints.get(side.local)
        if ep is None:
            continue
        keys.add((ChangeKind.POLICY_MAP, ep.endpoint_id))
        entries = state.policies.get(ep.endpoint_id)
        if not entries:
            continue
        for identity in (peer, ReservedIdentity.ANY):
            hit = lpm_lookup(entries, side.direction, identity, side.protocol, side.port)
            if hit is not None:
                keys.add((ChangeKind.POLICY, _hashable(codec.policy_key(ep.endpoint_id, hit[0]))))
    if peer_before != peer_after:
        for state in (before, after):
            for prefix in state.ipcache:
                if side.peer in prefix:
                    keys.add((ChangeKind.IPCACHE, str(prefix)))
    return keys


def _hashable(key: Any) -> Any:
    """A change key (JSON-ready: dict, str, int, None) as a hashable value."""
    if isinstance(key, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in key.items()))
    if isinstance(key, list):
        return tuple(_hashable(v) for v in key)
    return key


def _group(
    cut: Iterable[tuple[TrackedConnection, list[str]]],
    observed: Mapping[str, NodeState],
    intended: Mapping[str, NodeState],
    catalog: Catalog,
    names: dict[IPv4Address, str],
) -> list[CutRow]:
    rows: dict[tuple[str, str, str, int], tuple[int, list[str]]] = {}
    namer = _AddressNamer(observed, intended, catalog, names)
    for conn, by in cut:
        proto = PROTOCOL_NAMES.get(conn.protocol, f"proto{conn.protocol}")
        key = (namer(IPv4Address(conn.saddr)), namer(IPv4Address(conn.daddr)), proto, conn.policy_port)
        count, changes = rows.get(key, (0, []))
        changes.extend(a for a in by if a not in changes)
        rows[key] = (count + 1, changes)
    out = [CutRow(src, dst, proto, port, count, tuple(changes))
           for (src, dst, proto, port), (count, changes) in rows.items()]
    out.sort(key=lambda r: (-r.count, r.dst, r.port, r.protocol, r.src))
    return out


class _AddressNamer:
    """"ns/pod" for pods, else the endpoint or identity the nodes know, else "world"."""

    def __init__(self, observed: Mapping[str, NodeState], intended: Mapping[str, NodeState],
                 catalog: Catalog, names: dict[IPv4Address, str]) -> None:
        self.observed, self.intended, self.catalog, self.names = observed, intended, catalog, names

    def __call__(self, ip: IPv4Address) -> str:
        name = self.names.get(ip)
        if name is None:
            name = self.names[ip] = self._lookup(ip)
        return name

    def _lookup(self, ip: IPv4Address) -> str:
        for states in (self.intended, self.observed):
            for node, state in states.items():
                if ip in state.endpoints:
                    return Namer(self.catalog, node, state).endpoint_at(ip)
        for states in (self.intended, self.observed):
            for node, state in states.items():
                identity = ipcache_lookup(state.ipcache, ip)
                if identity != ReservedIdentity.WORLD:
                    return Namer(self.catalog, node, state).peer(identity)
        return WORLD_NAME


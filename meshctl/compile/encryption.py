"""Encryption -> the intended WireguardState of every node: a pure, phased rollout step.

A plan can only move each node once, and a node must never send encrypted traffic to a peer
that cannot decrypt it yet. So the target is computed from the LIVE WireGuard state of all
nodes (public keys and who accepts whom) and each apply is one safe step of a convergence:

enable   1. every node gets its interface and key (known after apply), sending plain;
         2. every node lists every keyed peer (accepts encrypted traffic, still sends plain);
         3. node N routes peer P through the tunnel only once P accepts N's current key;
            strictMode drops plain traffic only towards routed peers.
disable  1. routes, rules and strict drops go (plain again), interface and peers stay, so a
            peer still sending encrypted is still decrypted;
         2. the interface goes once no live peer routes to it any more.
rotate   the node's tunnels are unrouted on both ends first; once nobody routes to or from it,
         its key is regenerated on the node ("" = known after apply); then steps 2-3 again.

Peers follow nodes joining and leaving the same way. Apply again until the plan is empty
(`meshctl encryption rollout` does exactly that, verifying between steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from meshctl.nodestate import NO_ENCRYPTION, FrozenMap, WireguardPeer, WireguardState

TUNNEL_FWMARK = 0xE57
RULE_POD = "from {cidr}"
RULE_NODE = f"not fwmark {TUNNEL_FWMARK:#x}"


@dataclass(frozen=True)
class EncryptionNode:
    """What encryption needs to know of a node: its pod CIDR and underlay address."""

    name: str
    pod_cidr: IPv4Network
    underlay_ip: IPv4Address
    interface: str  # meshctl.dataplane.wireguard.names.interface(cluster, name)


@dataclass(frozen=True)
class EncryptionSettings:
    enabled: bool = False
    listen_port: int = 51871
    persistent_keepalive: int = 0
    strict_mode: bool = False
    node_encryption: bool = False


def _allowed(node: EncryptionNode, settings: EncryptionSettings) -> tuple[IPv4Network, ...]:
    ips = [node.pod_cidr]
    if settings.node_encryption:
        ips.append(IPv4Network(f"{node.underlay_ip}/32"))
    return tuple(sorted(ips))


def _live_key(state: WireguardState | None) -> str:
    return state.public_key if state is not None and state.interface else ""


def _accepts(live: WireguardState | None, key: str, allowed: tuple[IPv4Network, ...]) -> bool:
    """True when `live` (a peer's device) decrypts traffic from `key` sourced in `allowed`."""
    if live is None or not live.interface or not key:
        return False
    peer = live.peers.get(key)
    return peer is not None and set(allowed) <= set(peer.allowed_ips)


def _routes_to(live: WireguardState | None, key: str) -> bool:
    return live is not None and bool(key) and (p := live.peers.get(key)) is not None and p.routed


def encryption_targets(
    nodes: Sequence[EncryptionNode],
    settings: EncryptionSettings,
    live: Mapping[str, WireguardState],
    rotate: frozenset[str] = frozenset(),
) -> dict[str, WireguardState]:
    """The next safe WireguardState of every node in `nodes` (see the module doc)."""
    if not settings.enabled:
        return {n.name: _disable_step(n, nodes, live) for n in nodes}
    return {n.name: _enable_step(n, nodes, settings, live, rotate) for n in nodes}


def _enable_step(
    me: EncryptionNode,
    nodes: Sequence[EncryptionNode],
    settings: EncryptionSettings,
    live: Mapping[str, WireguardState],
    rotate: frozenset[str],
) -> WireguardState:
    mine = live.get(me.name)
    my_key = _live_key(mine)
    peers: dict[str, WireguardPeer] = {}
    for other in nodes:
        if other.name == me.name:
            continue
        key = _live_key(live.get(other.name))
        if not key:
            continue  # no key yet: it becomes a peer once its key is known (next step)
        routed = (
            me.name not in rotate
            and other.name not in rotate
            and _accepts(live.get(other.name), my_key, _allowed(me, settings))
        )
        peers[key] = WireguardPeer(
            endpoint=f"{other.underlay_ip}:{settings.listen_port}",
            allowed_ips=_allowed(other, settings),
            keepalive=settings.persistent_keepalive,
            routed=routed,
            name=other.name,
        )
    if (
        me.name in rotate
        and my_key
        and not _anyone_routes(me, nodes, live, my_key)
        and not any(p.routed for p in (mine.peers.values() if mine else ()))
    ):
        my_key = ""  # regenerate on the node at apply time
    sources = (RULE_NODE,) if settings.node_encryption else (RULE_POD.format(cidr=me.pod_cidr),)
    strict = tuple(
        sorted(
            a
            for p in peers.values()
            if p.routed
            for a in p.allowed_ips
            if settings.strict_mode and a.prefixlen < 32
        )
    )
    return WireguardState(
        interface=me.interface,
        public_key=my_key,
        listen_port=settings.listen_port,
        fwmark=TUNNEL_FWMARK,
        peers=FrozenMap(peers),
        sources=sources,
        strict=strict,
    )


def _anyone_routes(
    me: EncryptionNode, nodes: Sequence[EncryptionNode], live: Mapping[str, WireguardState], key: str
) -> bool:
    return any(_routes_to(live.get(o.name), key) for o in nodes if o.name != me.name)


def _disable_step(
    me: EncryptionNode, nodes: Sequence[EncryptionNode], live: Mapping[str, WireguardState]
) -> WireguardState:
    mine = live.get(me.name) or NO_ENCRYPTION
    if mine == NO_ENCRYPTION:
        return NO_ENCRYPTION
    sends_encrypted = any(p.routed for p in mine.peers.values()) or bool(mine.sources or mine.strict)
    if not sends_encrypted and not _anyone_routes(me, nodes, live, _live_key(mine)):
        return NO_ENCRYPTION
    if not mine.interface:
        return NO_ENCRYPTION  # leftover rules without a device: nothing can depend on them
    unrouted = {
        k: WireguardPeer(p.endpoint, p.allowed_ips, p.keepalive, False, p.name) for k, p in mine.peers.items()
    }
    return WireguardState(
        interface=mine.interface,
        public_key=mine.public_key,
        listen_port=mine.listen_port,
        fwmark=mine.fwmark,
        peers=FrozenMap(unrouted),
        sources=(),
        strict=(),
    )

"""Plan changes of a node's WireGuard side, and their inverse for patch.apply_changes.

Two kinds: `<node> wireguard interface` (device, public key, listen port, routing rules,
strict-mode drops) and `<node> wireguard peer <peer node>` (one per peer). Only public keys
appear; a public key "" means "generated on the node at apply time" and shows as such.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any

from meshctl.errors import PlanError
from meshctl.nodestate import NO_ENCRYPTION, FrozenMap, NodeState, WireguardPeer, WireguardState
from meshctl.plan.action import Action
from meshctl.plan.change import Change, ChangeKind

KNOWN_AFTER_APPLY = "(known after apply)"


def head_value(w: WireguardState) -> dict[str, Any] | None:
    """The interface part (everything but peers); None when it is all defaults."""
    head = replace(w, peers=FrozenMap())
    if head == NO_ENCRYPTION:
        return None
    d = head.canonical()
    del d["peers"]
    if d["interface"] and not d["public_key"]:
        d["public_key"] = KNOWN_AFTER_APPLY  # generated on the node at apply time
    return d


def peer_value(p: WireguardPeer) -> dict[str, Any]:
    return {
        "node": p.name,
        "endpoint": p.endpoint,
        "allowed_ips": [str(a) for a in p.allowed_ips],
        "keepalive": p.keepalive,
        "routed": p.routed,
    }


def peer_from(v: dict[str, Any]) -> WireguardPeer:
    return WireguardPeer(v["endpoint"], tuple(IPv4Network(a) for a in v["allowed_ips"]),
                         int(v["keepalive"]), bool(v["routed"]), v.get("node", ""))


def _head_reason(b: WireguardState, a: WireguardState) -> str:
    why = []
    if a.interface and not b.interface:
        why.append(f"start WireGuard device {a.interface}")
    if not a.interface and b.interface:
        why.append(f"stop WireGuard device {b.interface}: no peer routes to it any more")
    if a.interface and not a.public_key:
        why.append("rotate the node's key" if b.public_key else "create the node's key")
        why.append(f"private key stays on the node, public key {KNOWN_AFTER_APPLY}")
    if a.sources != b.sources:
        why.append(f"tunnel routing rules {list(b.sources)} -> {list(a.sources)}")
    if a.strict != b.strict:
        why.append("strict mode drops plain pod traffic to " + (", ".join(map(str, a.strict)) or "nothing"))
    if (a.listen_port, a.fwmark) != (b.listen_port, b.fwmark) and a.interface and b.interface:
        why.append(f"listen port {b.listen_port} -> {a.listen_port}, fwmark {b.fwmark:#x} -> {a.fwmark:#x}")
    return "; ".join(why)


def _peer_reason(b: WireguardPeer | None, a: WireguardPeer | None, name: str) -> str:
    if a is None:
        return f"{name} is no longer a peer (left the cluster, rotated its key or encryption is off)"
    if b is None:
        how = "and route pod traffic to it through the tunnel" if a.routed else "(still sending plain)"
        return f"accept encrypted traffic from {name} {how}"
    if a.routed and not b.routed:
        return f"{name} accepts our key: route traffic to it through the tunnel"
    if b.routed and not a.routed:
        return f"send traffic to {name} the plain way again"
    return f"peer settings of {name} changed"


def peer_label(key: str, *peers: WireguardPeer | None) -> str:
    for p in peers:
        if p is not None and p.name:
            return p.name
    endpoint = next((p.endpoint for p in peers if p is not None and p.endpoint), "")
    host = endpoint.rsplit(":", 1)[0]
    return f"{host} (key {key[:8]}…)" if host else f"key {key[:8]}…"


def wireguard_changes(before: NodeState, after: NodeState) -> Iterator[Change]:
    b, a = before.encryption, after.encryption
    if b == a:
        return
    node = after.node
    hb, ha = head_value(b), head_value(a)
    if hb != ha:
        action = Action.CREATE if hb is None else Action.DELETE if ha is None else Action.UPDATE
        yield Change(node, ChangeKind.WIREGUARD, None, f"{node} wireguard interface", action, hb, ha,
                     _head_reason(b, a))
    for key in sorted(set(b.peers) | set(a.peers)):
        pb, pa = b.peers.get(key), a.peers.get(key)
        if pb == pa:
            continue
        name = peer_label(key, pa, pb)
        if pb is not None and not pb.name:
            pb = replace(pb, name=name if pa is not None else "")  # observe cannot know names
        action = Action.CREATE if pb is None else Action.DELETE if pa is None else Action.UPDATE
        yield Change(node, ChangeKind.WIREGUARD_PEER, key, f"{node} wireguard peer {name}", action,
                     peer_value(pb) if pb else None, peer_value(pa) if pa else None,
                     _peer_reason(pb, pa, name))


class WireguardPatch:
    """Accumulates WireGuard changes over a starting WireguardState (patch.apply_changes)."""

    def __init__(self, start: WireguardState) -> None:
        self.head = head_value(start)
        self.peers = dict(start.peers)

    def apply(self, ch: Change, strict: bool) -> None:
        if ch.kind is ChangeKind.WIREGUARD:
            if strict and self.head != ch.before:
                raise PlanError(f"{ch.address}: state does not match the plan")
            self.head = ch.after
            return
        cur = self.peers.get(ch.key)
        if strict and (peer_value(cur) if cur else None) != ch.before and not _same(cur, ch.before):
            raise PlanError(f"{ch.address}: state does not match the plan")
        if ch.after is None:
            self.peers.pop(ch.key, None)
        else:
            self.peers[ch.key] = peer_from(ch.after)

    def result(self) -> WireguardState:
        if not self.head:
            return replace(NO_ENCRYPTION, peers=FrozenMap(self.peers))
        d = {**self.head, "peers": []}
        if d["public_key"] == KNOWN_AFTER_APPLY:
            d["public_key"] = ""
        head = WireguardState.from_canonical(d)
        return replace(head, peers=FrozenMap(self.peers))


def _same(cur: WireguardPeer | None, before: dict[str, Any] | None) -> bool:
    """Peer names are for people: a plan made with a name matches an observed nameless peer."""
    if cur is None or before is None:
        return cur is None and before is None
    return cur == peer_from(before)

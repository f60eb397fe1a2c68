"""The phased WireGuard rollout (compile/encryption.py), simulated node by node.

Each round plans every node from the live state, then applies node after node (the apply
engine's order); after EVERY single node the invariant must hold: a node routes a peer through
the tunnel only when that peer decrypts its current key. That is "no lost connection".
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from meshctl.compile.encryption import EncryptionNode, EncryptionSettings, encryption_targets
from meshctl.nodestate import NO_ENCRYPTION, WireguardState

NODES = [
    EncryptionNode(f"node-{i}", IPv4Network(f"10.{i}.0.0/24"), IPv4Address(f"172.31.250.{i}"),
                   f"mwg-node-{i}")
    for i in (1, 2, 3)
]
ON = EncryptionSettings(enabled=True, strict_mode=True)
OFF = EncryptionSettings(enabled=False)
_keys = itertools.count(1)


def _apply(target: WireguardState) -> WireguardState:
    """What the node looks like after reconcile: a key "" becomes a fresh key made on the node."""
    if target.interface and not target.public_key:
        return replace(target, public_key=f"K{next(_keys):04d}")
    return target


def _check_safe(live: dict[str, WireguardState], nodes: list[EncryptionNode]) -> None:
    by_cidr = {n.pod_cidr: n.name for n in NODES}
    members = {n.name for n in nodes}
    for n in nodes:
        mine = live.get(n.name, NO_ENCRYPTION)
        for peer in mine.peers.values():
            if not peer.routed:
                continue
            other = by_cidr.get(peer.allowed_ips[0])
            if other not in members:
                continue  # a node that left: nobody sends it pod traffic any more
            theirs = live.get(other, NO_ENCRYPTION)
            assert theirs.interface, f"{n.name} routes to {other}, which has no device"
            accepted = theirs.peers.get(mine.public_key)
            assert accepted is not None and n.pod_cidr in accepted.allowed_ips, (
                f"{n.name} sends encrypted to {other}, which cannot decrypt it")
        routed = {a for p in mine.peers.values() if p.routed for a in p.allowed_ips}
        assert set(mine.strict) <= routed, f"{n.name} strict-drops a peer it does not route"


def _converge(live: dict[str, WireguardState], settings: EncryptionSettings,
              nodes: list[EncryptionNode] = NODES, rotate: frozenset[str] = frozenset()) -> int:
    for rounds in range(1, 10):
        targets = encryption_targets(nodes, settings, live, rotate)
        if all(targets[n.name] == live.get(n.name, NO_ENCRYPTION) for n in nodes):
            return rounds - 1
        for n in nodes:  # node by node, like the apply engine
            live[n.name] = _apply(targets[n.name])
            _check_safe(live, nodes)
    raise AssertionError("did not converge")


def _fully_on(live: dict[str, WireguardState], nodes: list[EncryptionNode] = NODES) -> None:
    for n in nodes:
        w = live[n.name]
        assert w.interface and w.public_key
        assert len(w.peers) == len(nodes) - 1 and all(p.routed for p in w.peers.values())
        assert set(w.strict) == {o.pod_cidr for o in nodes if o is not n}


def test_enable_takes_three_safe_steps() -> None:
    live: dict[str, WireguardState] = {}
    assert _converge(live, ON) == 3
    _fully_on(live)


def test_enable_without_strict_has_no_drops() -> None:
    live: dict[str, WireguardState] = {}
    _converge(live, EncryptionSettings(enabled=True))
    assert all(not w.strict for w in live.values())


def test_disable_takes_two_safe_steps_and_leaves_nothing() -> None:
    live: dict[str, WireguardState] = {}
    _converge(live, ON)
    assert _converge(live, OFF) == 2
    assert all(w == NO_ENCRYPTION for w in live.values())


def test_first_disable_step_keeps_devices_so_peers_still_decrypt() -> None:
    live: dict[str, WireguardState] = {}
    _converge(live, ON)
    step = encryption_targets(NODES, OFF, live)
    for w in step.values():
        assert w.interface and w.peers and not w.strict and not w.sources
        assert not any(p.routed for p in w.peers.values())


def test_nothing_to_do_when_never_enabled() -> None:
    assert encryption_targets(NODES, OFF, {}) == {n.name: NO_ENCRYPTION for n in NODES}


@pytest.mark.parametrize("order", [NODES[:2] + NODES[2:], NODES[1:] + NODES[:1]])
def test_node_joining_and_leaving(order: list[EncryptionNode]) -> None:
    live: dict[str, WireguardState] = {}
    _converge(live, ON, order[:2])
    _converge(live, ON, order)  # joins
    _fully_on(live, order)
    _converge(live, ON, order[:2])  # leaves: the others drop it as a peer
    gone = order[2].name
    for n in order[:2]:
        assert all(p.allowed_ips[0] != order[2].pod_cidr for p in live[n.name].peers.values()), gone


def test_rotation_unroutes_first_then_changes_the_key() -> None:
    live: dict[str, WireguardState] = {}
    _converge(live, ON)
    old = live["node-2"].public_key
    first = encryption_targets(NODES, ON, live, frozenset({"node-2"}))
    assert first["node-2"].public_key == old  # still routed somewhere: unroute first
    assert not any(p.routed for p in first["node-2"].peers.values())
    assert not any(p.routed for k, p in first["node-1"].peers.items() if k == old)
    for n in NODES:
        live[n.name] = _apply(first[n.name])
        _check_safe(live, NODES)
    second = encryption_targets(NODES, ON, live, frozenset({"node-2"}))
    assert second["node-2"].public_key == ""  # nobody routes to it: regenerate on the node
    for n in NODES:
        live[n.name] = _apply(second[n.name])
        _check_safe(live, NODES)
    _converge(live, ON)
    assert live["node-2"].public_key != old
    _fully_on(live)


def test_node_encryption_routes_underlay_and_uses_the_fwmark_rule() -> None:
    live: dict[str, WireguardState] = {}
    _converge(live, EncryptionSettings(enabled=True, node_encryption=True, strict_mode=True))
    w = live["node-1"]
    assert w.sources == ("not fwmark 0xe57",)
    peer = next(p for p in w.peers.values() if IPv4Network("10.2.0.0/24") in p.allowed_ips)
    assert IPv4Network("172.31.250.2/32") in peer.allowed_ips
    assert IPv4Network("172.31.250.2/32") not in w.strict  # strict is about pod traffic

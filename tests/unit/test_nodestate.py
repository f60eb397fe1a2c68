"""NodeState is the value compile and observe agree on: equality, hashing, fingerprint."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from meshctl.nodestate import (
    PROTO_ANY,
    PROTO_TCP,
    PROTO_UDP,
    Direction,
    EndpointEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
    ReservedIdentity,
)


def _state(extra_port: int | None = None) -> NodeState:
    entries = {PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 3000, 16): PolicyEntry(cookie=7)}
    if extra_port is not None:
        entries[PolicyKey(Direction.INGRESS, 300, PROTO_TCP, extra_port, 16)] = PolicyEntry(cookie=8)
    return NodeState(
        node="node-1",
        ipcache=FrozenMap({IPv4Network("10.0.0.5/32"): IpcacheEntry(300)}),
        endpoints=FrozenMap({IPv4Address("10.0.0.6"): EndpointEntry(1, 301, True, False)}),
        policies=FrozenMap({1: FrozenMap(entries)}),
    )


def test_equal_states_hash_and_fingerprint_alike_regardless_of_insertion_order() -> None:
    a = FrozenMap({1: "a", 2: "b"})
    b = FrozenMap({2: "b", 1: "a"})
    assert a == b and hash(a) == hash(b) and list(a) == [1, 2]
    assert _state() == _state()
    assert _state().fingerprint() == _state().fingerprint()


def test_fingerprint_changes_with_any_entry() -> None:
    assert _state().fingerprint() != _state(extra_port=80).fingerprint()


def test_policy_key_port_prefix_ranges() -> None:
    key = PolicyKey(Direction.EGRESS, 0, PROTO_TCP, 8000, 10)  # 8000..8063
    assert key.port_range == (8000, 8063)
    assert key.lpm_prefixlen == 58
    assert PolicyKey(Direction.EGRESS, 0).lpm_prefixlen == 40
    with pytest.raises(ValueError):
        PolicyKey(Direction.EGRESS, 0, PROTO_TCP, 8001, 10)  # host bits set
    with pytest.raises(ValueError):
        PolicyKey(Direction.EGRESS, 0, PROTO_ANY, 80, 16)


def test_covers_follows_identity_protocol_and_port_range() -> None:
    any_peer_all_tcp = PolicyKey(Direction.INGRESS, ReservedIdentity.ANY, PROTO_TCP, 0, 0)
    one_peer_port = PolicyKey(Direction.INGRESS, 300, PROTO_TCP, 80, 16)
    assert any_peer_all_tcp.covers(one_peer_port)
    assert not one_peer_port.covers(any_peer_all_tcp)
    assert not any_peer_all_tcp.covers(PolicyKey(Direction.INGRESS, 300, PROTO_UDP, 80, 16))
    assert not any_peer_all_tcp.covers(PolicyKey(Direction.EGRESS, 300, PROTO_TCP, 80, 16))
    assert PolicyKey(Direction.INGRESS, 300).covers(one_peer_port)
    assert not PolicyKey(Direction.INGRESS, 301).covers(one_peer_port)

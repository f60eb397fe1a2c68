"""meshctl.verdicts on hand-built NodeStates: the datapath's lookup precedence, entry by entry."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from meshctl.nodestate import (
    PROTO_ANY,
    PROTO_ICMP,
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
from meshctl.verdicts import connection_verdict, ipcache_lookup, lpm_lookup, policy_verdict

IN, OUT = Direction.INGRESS, Direction.EGRESS
POD, PEER = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
PEER_ID, POD_ID = 300, 400
WORLD = ReservedIdentity.WORLD


def _state(
    entries: dict[PolicyKey, PolicyEntry],
    enforce: tuple[bool, bool] = (True, True),
    ipcache: dict[str, int] | None = None,
) -> NodeState:
    cache = {"10.0.0.1/32": POD_ID, "10.0.0.2/32": PEER_ID, **(ipcache or {})}
    return NodeState(
        node="n1",
        ipcache=FrozenMap({IPv4Network(p): IpcacheEntry(i) for p, i in cache.items()}),
        endpoints=FrozenMap({POD: EndpointEntry(1, POD_ID, *enforce)}),
        policies=FrozenMap({1: FrozenMap(entries)}),
    )


def _key(identity: int, proto: int = PROTO_ANY, port: int = 0, plen: int = 0, d: Direction = IN) -> PolicyKey:
    return PolicyKey(d, identity, proto, port, plen)


def _verdict(state: NodeState, peer: int, proto: int, port: int, d: Direction = IN) -> tuple[bool, str, int]:
    v = policy_verdict(state, POD, d, peer, proto, port)
    return v.allowed, v.reason, v.cookie


def test_specific_deny_beats_wildcard_allow_and_wildcard_deny_beats_specific_allow() -> None:
    st = _state({_key(PEER_ID): PolicyEntry(1, deny=True), _key(0): PolicyEntry(2)})
    assert _verdict(st, PEER_ID, PROTO_TCP, 80) == (False, "explicit-deny", 1)
    assert _verdict(st, 999, PROTO_TCP, 80) == (True, "allowed", 2)
    st = _state({_key(PEER_ID, PROTO_TCP, 80, 16): PolicyEntry(1), _key(0): PolicyEntry(2, deny=True)})
    assert _verdict(st, PEER_ID, PROTO_TCP, 80) == (False, "explicit-deny", 2)


def test_identity_allow_is_reported_before_the_wildcard_allow() -> None:
    st = _state({_key(PEER_ID, PROTO_TCP): PolicyEntry(7), _key(0): PolicyEntry(8)})
    assert _verdict(st, PEER_ID, PROTO_TCP, 443) == (True, "allowed", 7)
    assert _verdict(st, PEER_ID, PROTO_UDP, 53) == (True, "allowed", 8)


def test_port_prefixes_match_their_block_and_the_longest_wins() -> None:
    st = _state(
        {
            _key(PEER_ID, PROTO_TCP, 80, 13): PolicyEntry(1),  # 80-87
            _key(PEER_ID, PROTO_TCP, 84, 14): PolicyEntry(2, deny=True),  # 84-87
        }
    )
    assert _verdict(st, PEER_ID, PROTO_TCP, 81) == (True, "allowed", 1)
    assert _verdict(st, PEER_ID, PROTO_TCP, 85) == (False, "explicit-deny", 2)
    assert _verdict(st, PEER_ID, PROTO_TCP, 88) == (False, "default-deny", 0)
    assert _verdict(st, PEER_ID, PROTO_TCP, 79) == (False, "default-deny", 0)
    assert _verdict(st, PEER_ID, PROTO_UDP, 81) == (False, "default-deny", 0)


def test_protocol_any_matches_every_protocol_but_a_protocol_entry_is_longer() -> None:
    st = _state({_key(PEER_ID): PolicyEntry(1), _key(PEER_ID, PROTO_TCP, 22, 16): PolicyEntry(2, deny=True)})
    assert _verdict(st, PEER_ID, PROTO_UDP, 53) == (True, "allowed", 1)
    assert _verdict(st, PEER_ID, PROTO_ICMP, 0) == (True, "allowed", 1)
    assert _verdict(st, PEER_ID, PROTO_TCP, 22) == (False, "explicit-deny", 2)
    hit = lpm_lookup(st.policies[1], IN, PEER_ID, PROTO_TCP, 23)
    assert hit is not None and hit[0] == _key(PEER_ID)


def test_directions_are_separate_tables() -> None:
    st = _state({_key(PEER_ID, d=OUT): PolicyEntry(1)})
    assert _verdict(st, PEER_ID, PROTO_TCP, 80, OUT) == (True, "allowed", 1)
    assert _verdict(st, PEER_ID, PROTO_TCP, 80, IN) == (False, "default-deny", 0)


def test_not_enforced_and_no_endpoint() -> None:
    st = _state({}, enforce=(False, True))
    assert _verdict(st, PEER_ID, PROTO_TCP, 80, IN) == (True, "not-enforced", 0)
    assert _verdict(st, PEER_ID, PROTO_TCP, 80, OUT) == (False, "default-deny", 0)
    v = policy_verdict(st, IPv4Address("10.0.0.9"), IN, PEER_ID, PROTO_TCP, 80)
    assert (v.allowed, v.reason) == (False, "no-endpoint")
    cv = connection_verdict({"n1": st}, IPv4Address("1.1.1.1"), IPv4Address("2.2.2.2"), PROTO_TCP, 80)
    assert cv.egress is None and cv.ingress is None and cv.allowed


def test_ipcache_miss_is_world() -> None:
    st = _state({_key(WORLD): PolicyEntry(5)})
    assert ipcache_lookup(st.ipcache, IPv4Address("8.8.8.8")) == WORLD
    cv = connection_verdict({"n1": st}, IPv4Address("8.8.8.8"), POD, PROTO_TCP, 80)
    assert cv.allowed and cv.ingress is not None and cv.ingress.cookie == 5
    cv = connection_verdict({"n1": st}, PEER, POD, PROTO_TCP, 80)  # PEER has its own identity
    assert not cv.allowed and cv.ingress is not None and cv.ingress.reason == "default-deny"


@pytest.mark.parametrize(
    ("addr", "identity"),
    [
        ("10.9.9.9", 1 << 24),  # only the /8
        ("10.1.9.9", (1 << 24) + 1),  # the /16 is longer
        ("10.1.2.3", (1 << 24) + 2),  # the /32 is longest
        ("10.1.2.4", (1 << 24) + 1),
        ("11.0.0.1", WORLD),
    ],
)
def test_cidr_prefixes_longest_match(addr: str, identity: int) -> None:
    cidrs = {"10.0.0.0/8": 1 << 24, "10.1.0.0/16": (1 << 24) + 1, "10.1.2.3/32": (1 << 24) + 2}
    st = _state({}, ipcache=cidrs)
    assert ipcache_lookup(st.ipcache, IPv4Address(addr)) == identity


def test_connection_needs_both_ends_and_checks_each_at_its_node() -> None:
    src_state = NodeState(
        node="n2",
        ipcache=FrozenMap({IPv4Network("10.0.0.1/32"): IpcacheEntry(POD_ID)}),
        endpoints=FrozenMap({PEER: EndpointEntry(1, PEER_ID, True, True)}),
        policies=FrozenMap({1: FrozenMap({_key(POD_ID, PROTO_TCP, 80, 16, OUT): PolicyEntry(3)})}),
    )
    dst_state = _state({_key(PEER_ID, PROTO_TCP): PolicyEntry(4)})
    nodes = {"n1": dst_state, "n2": src_state}
    ok = connection_verdict(nodes, PEER, POD, PROTO_TCP, 80)
    assert ok.allowed and ok.egress is not None and ok.egress.cookie == 3
    assert ok.ingress is not None and ok.ingress.cookie == 4
    blocked = connection_verdict(nodes, PEER, POD, PROTO_TCP, 81)
    assert not blocked.allowed and blocked.egress is not None and blocked.egress.reason == "default-deny"
    assert blocked.ingress is not None and blocked.ingress.allowed


def test_lookups_do_not_leak_between_maps() -> None:
    """The per-map index is memoized by object: a different map must give its own answer."""
    a = _state({_key(PEER_ID): PolicyEntry(1)})
    b = _state({_key(PEER_ID): PolicyEntry(2, deny=True)})
    assert _verdict(a, PEER_ID, PROTO_TCP, 80) == (True, "allowed", 1)
    assert _verdict(b, PEER_ID, PROTO_TCP, 80) == (False, "explicit-deny", 2)
    assert _verdict(a, PEER_ID, PROTO_TCP, 80) == (True, "allowed", 1)


def test_attached_address_without_endpoint_entry_fails_closed() -> None:
    """The datapath drops traffic of a pod whose veth has programs but no endpoint entry yet."""
    from meshctl.nodestate import Attachment

    pod = IPv4Address("10.9.0.5")
    attached = NodeState(node="n1", attachments=frozenset(
        {Attachment(pod, "from-pod", "b"), Attachment(pod, "to-pod", "b")}
    ))
    outside = IPv4Address("192.0.2.1")
    out = connection_verdict({"n1": attached}, pod, outside, PROTO_TCP, 80)
    assert not out.allowed and out.egress is not None and out.egress.reason == "no-endpoint"
    into = connection_verdict({"n1": attached}, outside, pod, PROTO_TCP, 80)
    assert not into.allowed and into.ingress is not None and into.ingress.reason == "no-endpoint"
    bare = connection_verdict({"n1": NodeState(node="n1")}, outside, pod, PROTO_TCP, 80)
    assert bare.allowed and bare.ingress is None

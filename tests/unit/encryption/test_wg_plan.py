"""WireGuard changes in plans: readable addresses, exact diff/patch round trip, canonical form."""

from __future__ import annotations

from ipaddress import IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.nodestate import NO_ENCRYPTION, FrozenMap, NodeState, WireguardPeer, WireguardState
from meshctl.plan import Action, apply_changes, diff_node
from meshctl.plan.change import Change

KEYS = ["AAAA" + "a" * 39 + "=", "BBBB" + "b" * 39 + "=", "CCCC" + "c" * 39 + "="]
CIDRS = [IPv4Network("10.2.0.0/24"), IPv4Network("10.3.0.0/24"), IPv4Network("172.31.250.2/32")]

peers = st.builds(
    WireguardPeer,
    st.sampled_from(["172.31.250.2:51871", "172.31.250.3:51871", ""]),
    st.lists(st.sampled_from(CIDRS), unique=True, max_size=2).map(lambda xs: tuple(sorted(xs))),
    st.sampled_from([0, 25]),
    st.booleans(),
    st.sampled_from(["", "node-2"]),
)
wg_states = st.one_of(
    st.just(NO_ENCRYPTION),
    st.builds(
        WireguardState,
        st.sampled_from(["", "mwg-node-1-ab12"]),
        st.sampled_from(["", KEYS[0]]),
        st.sampled_from([0, 51871]),
        st.sampled_from([0, 0xE57]),
        st.dictionaries(st.sampled_from(KEYS), peers, max_size=3).map(FrozenMap),
        st.sampled_from([(), ("from 10.1.0.0/24",), ("not fwmark 0xe57",)]),
        st.lists(st.sampled_from(CIDRS[:2]), unique=True).map(lambda xs: tuple(sorted(xs))),
    ),
)


@settings(max_examples=300, deadline=None)
@given(wg_states, wg_states)
def test_diff_then_patch_gives_the_target(a: WireguardState, b: WireguardState) -> None:
    before, after = NodeState("node-1", encryption=a), NodeState("node-1", encryption=b)
    changes = diff_node(before, after)
    assert apply_changes(before, changes) == after
    # and through the plan file's JSON form
    again = tuple(Change.from_json(c.to_json()) for c in changes)
    assert apply_changes(before, again) == after
    assert NodeState.from_canonical(after.canonical()) == after


def test_addresses_name_the_peer_node() -> None:
    peer = WireguardPeer("172.31.250.2:51871", (CIDRS[0],), 0, False, "node-2")
    after = NodeState("node-1", encryption=WireguardState(
        "mwg-node-1-ab12", "", 51871, 0xE57, FrozenMap({KEYS[1]: peer}), ("from 10.1.0.0/24",)))
    changes = diff_node(NodeState("node-1"), after)
    assert [(c.address, c.action) for c in changes] == [
        ("node-1 wireguard interface", Action.CREATE),
        ("node-1 wireguard peer node-2", Action.CREATE),
    ]
    assert "create the node's key" in changes[0].reason
    assert "known after apply" in changes[0].reason
    assert "still sending plain" in changes[1].reason


def test_a_hand_added_peer_shows_by_key() -> None:
    stranger = WireguardPeer("192.0.2.1:51820", (IPv4Network("10.9.0.0/24"),))
    base = WireguardState("mwg-node-1-ab12", KEYS[0], 51871, 0xE57)
    observed = NodeState("node-1", encryption=WireguardState(
        base.interface, base.public_key, 51871, 0xE57, FrozenMap({KEYS[2]: stranger})))
    (change,) = diff_node(observed, NodeState("node-1", encryption=base))
    assert change.action is Action.DELETE
    assert change.address == "node-1 wireguard peer 192.0.2.1 (key CCCCcccc…)"


def test_state_without_encryption_keeps_its_old_canonical_form() -> None:
    assert "encryption" not in NodeState("n").canonical()
    assert NodeState.from_canonical(NodeState("n").canonical()).encryption == NO_ENCRYPTION

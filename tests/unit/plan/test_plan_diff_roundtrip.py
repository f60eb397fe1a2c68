"""diff/apply round trip (property) and NodeState canonical round trip."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.catalog import Catalog
from meshctl.errors import PlanError
from meshctl.nodestate import (
    Attachment,
    DatapathConfig,
    Direction,
    EndpointEntry,
    ForeignEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.plan import Action, apply_changes, diff_node
from meshctl.state.journal import JournalRecord

ADDRS = [IPv4Address(f"10.101.1.{i}") for i in range(1, 6)]
PREFIXES = [IPv4Network(f"10.101.1.{i}/32") for i in range(1, 6)] + [IPv4Network("0.0.0.0/0")]
BOOL = st.booleans()


@st.composite
def policy_keys(draw: st.DrawFn) -> PolicyKey:
    direction = draw(st.sampled_from(list(Direction)))
    identity = draw(st.sampled_from([0, 2, 256, 257, 1 << 24]))
    protocol = draw(st.sampled_from([0, 6, 17]))
    if protocol == 0:
        return PolicyKey(direction, identity)
    prefix = draw(st.sampled_from([0, 10, 16]))
    port = draw(st.integers(0, 65535)) & ~((1 << (16 - prefix)) - 1)
    return PolicyKey(direction, identity, protocol, port, prefix)


policy_entries = st.builds(PolicyEntry, st.sampled_from([1, 2, 0xDEADBEEF]), st.booleans())


@st.composite
def node_states(draw: st.DrawFn) -> NodeState:
    config = draw(st.sampled_from([DatapathConfig(), DatapathConfig(ipv6_pass=True, ct_timeout_syn_s=30)]))
    ipcache = draw(
        st.dictionaries(
            st.sampled_from(PREFIXES),
            st.builds(IpcacheEntry, st.sampled_from([2, 256, 257]), st.sampled_from([0, 1])),
        )
    )
    endpoints = draw(
        st.dictionaries(
            st.sampled_from(ADDRS),
            st.builds(EndpointEntry, st.integers(1, 4), st.sampled_from([256, 257]), BOOL, BOOL, BOOL, BOOL),
        )
    )
    policies = draw(
        st.dictionaries(
            st.integers(1, 4),
            st.dictionaries(policy_keys(), policy_entries, max_size=6).map(FrozenMap),
            max_size=3,
        )
    )
    attachments = draw(
        st.frozensets(
            st.builds(Attachment, st.sampled_from(ADDRS), st.sampled_from(["from-pod", "to-pod"]),
                      st.sampled_from(["sha256:aa", "sha256:bb"])),
            max_size=4,
        )
    )
    foreign = draw(st.frozensets(  # observed hand-made entries (a prefix-32 policy key, ...)
        st.builds(ForeignEntry, st.sampled_from(["policy", "ipcache"]), st.integers(0, 4),
                  st.sampled_from(["2000000002010000", "1800000a65010203"]), st.sampled_from(["00", "01"])),
        max_size=3))
    return NodeState(
        "node-1", config, FrozenMap(ipcache), FrozenMap(endpoints), FrozenMap(policies), attachments,
        foreign=foreign,
    )


@settings(max_examples=100, deadline=None)
@given(node_states(), node_states())
def test_apply_changes_of_diff_gives_target(a: NodeState, b: NodeState) -> None:
    changes = diff_node(a, b, Catalog())
    assert apply_changes(a, changes) == b
    assert (not changes) == (a == b)
    assert all(c.action is not Action.NOOP for c in changes)


@settings(max_examples=50, deadline=None)
@given(node_states())
def test_canonical_round_trip(a: NodeState) -> None:
    back = NodeState.from_canonical(a.canonical())
    assert back == a
    assert back.fingerprint() == a.fingerprint()


def test_apply_changes_refuses_a_state_that_moved() -> None:
    ip = IPv4Network("10.101.1.1/32")
    a = NodeState("node-1", ipcache=FrozenMap({ip: IpcacheEntry(256)}))
    b = NodeState("node-1", ipcache=FrozenMap({ip: IpcacheEntry(257)}))
    moved = NodeState("node-1", ipcache=FrozenMap({ip: IpcacheEntry(300)}))
    changes = diff_node(a, b)
    with pytest.raises(PlanError, match=r"node-1 ipcache 10.101.1.1/32: state does not match"):
        apply_changes(moved, changes)
    assert apply_changes(moved, changes, strict=False) == b


def test_endpoint_id_change_is_a_replace() -> None:
    ip = ADDRS[0]
    a = NodeState("node-1", endpoints=FrozenMap({ip: EndpointEntry(1, 256, True, False)}))
    b = NodeState("node-1", endpoints=FrozenMap({ip: EndpointEntry(2, 256, True, False)}))
    (change,) = diff_node(a, b)
    assert change.action is Action.REPLACE
    assert change.action.json_actions == ["delete", "create"]


@settings(max_examples=50, deadline=None)
@given(node_states(), node_states())
def test_canonical_json_is_the_compact_json_of_canonical(a: NodeState, b: NodeState) -> None:
    assert a.canonical_json() == json.dumps(a.canonical(), sort_keys=True, separators=(",", ":"))
    record = JournalRecord("sha256:p", a.node, "begin", a, b)
    text = record.to_text()
    assert text == json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))
    assert JournalRecord.from_json(json.loads(text)) == record
    done = JournalRecord("sha256:p", a.node, "done")
    assert done.to_text() == json.dumps(done.to_json(), sort_keys=True, separators=(",", ":"))

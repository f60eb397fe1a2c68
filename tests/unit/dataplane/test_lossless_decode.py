"""Observe's decoders are lossless: every raw entry is either typed and re-encodes to exactly its
bytes, or kept byte for byte as a ForeignEntry. Nothing is normalised into a compiled twin."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from meshctl.dataplane import lb_maps
from meshctl.dataplane.foreign import explain, explain_policy
from meshctl.dataplane.maps import (
    decode_config_entry,
    decode_endpoint_table,
    decode_ipcache_table,
    decode_policy_dump,
    encode_config,
    encode_endpoint,
    encode_ipcache,
    encode_policy,
)
from meshctl.nodestate import (
    PROTO_TCP,
    DatapathConfig,
    Direction,
    FrozenMap,
    LbBackendEntry,
    LbFrontend,
    LbService,
    LoadBalancerState,
    PolicyEntry,
    PolicyKey,
)

raw_policy_key = st.builds(
    lambda plen, ident, egress, proto, port: (
        struct.pack("<IIBB", plen, ident, egress, proto) + port.to_bytes(2, "big")),
    st.integers(0, 64), st.sampled_from([0, 256, 258, 2**32 - 1]), st.sampled_from([0, 1, 2, 255]),
    st.sampled_from([0, 1, 6, 17, 255]), st.sampled_from([0, 53, 80, 3000, 0x8000, 65535]),
)
raw_policy_value = st.builds(lambda cookie, flags, pad: struct.pack("<IB", cookie, flags) + pad,
                             st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2, 3, 128]),
                             st.sampled_from([b"\0\0\0", b"\0\1\0"]))


def _policy_dump(pairs: dict[bytes, bytes]) -> tuple[bytes, bytes]:
    return b"".join(pairs), b"".join(pairs.values())


@given(st.dictionaries(raw_policy_key, raw_policy_value, max_size=20))
def test_policy_dump_keeps_every_entry_exactly(pairs: dict[bytes, bytes]) -> None:
    table, foreign = decode_policy_dump(*_policy_dump(pairs))
    rebuilt = dict(encode_policy(k, v) for k, v in table.items())
    rebuilt.update(foreign)
    assert rebuilt == pairs
    assert len(table) + len(foreign) == len(pairs)


def test_prefix_32_allow_is_not_the_compiled_prefix_40_entry() -> None:
    """The issue's case: one identity, both directions, any protocol (prefix 32) next to the
    compiled prefix-40 ingress entry of the same identity. The old decoder made them one key."""
    compiled_k, compiled_v = encode_policy(PolicyKey(Direction.INGRESS, 258), PolicyEntry(7))
    hand_k = struct.pack("<IIBBH", 32, 258, 0, 0, 0)
    hand_v = struct.pack("<IB3x", 99, 0)
    table, foreign = decode_policy_dump(compiled_k + hand_k, compiled_v + hand_v)
    assert dict(table) == {PolicyKey(Direction.INGRESS, 258): PolicyEntry(7)}
    assert foreign == ((hand_k, hand_v),)
    text = explain_policy(hand_k, hand_v, lambda i: f"demo/frontend (identity {i})")
    assert text.startswith("allows demo/frontend (identity 258) in both directions, every protocol and port")


def test_explain_every_peer_and_port_ranges() -> None:
    k = struct.pack("<IIBB", 0, 0, 0, 0) + b"\0\0"
    assert explain_policy(k, struct.pack("<IB3x", 1, 0)).startswith("allows every peer in both directions")
    k = struct.pack("<IIBB", 60, 300, 1, PROTO_TCP) + (8192).to_bytes(2, "big")
    text = explain_policy(k, struct.pack("<IB3x", 1, 1))
    assert text.startswith("denies 300 on egress, tcp ports 8192-8207")


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                max_size=12, unique_by=lambda t: (t[0], t[1])))
def test_ipcache_keeps_host_bits(rows: list[tuple[int, int, int]]) -> None:
    items = [(struct.pack("<I", plen) + addr.to_bytes(4, "big"), struct.pack("<II", ident, 0))
             for plen, addr, ident in rows]
    table, foreign = decode_ipcache_table(items)
    rebuilt = {encode_ipcache(p, e) for p, e in table.items()} | {
        (bytes.fromhex(f.key), bytes.fromhex(f.value)) for f in foreign}
    assert rebuilt == set(items)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 31)), max_size=8,
                unique_by=lambda t: t[0]))
def test_endpoint_unknown_flags_are_foreign(rows: list[tuple[int, int]]) -> None:
    items = [(addr.to_bytes(4, "big"), struct.pack("<III", 1, 256, flags)) for addr, flags in rows]
    table, foreign = decode_endpoint_table(items)
    rebuilt = {encode_endpoint(a, e) for a, e in table.items()} | {
        (bytes.fromhex(f.key), bytes.fromhex(f.value)) for f in foreign}
    assert rebuilt == set(items)
    assert len(foreign) == sum(1 for _, f in rows if f & 16)  # bits 0..3: enforce and audit, in+eg


def test_config_unknown_flags_and_pad_are_foreign() -> None:
    good = encode_config(DatapathConfig())
    assert decode_config_entry(good) == (DatapathConfig(), [])
    for bad in (b"\x04" + good[1:], good[:20] + b"\x01\0\0\0"):  # bits 0..1 are known
        _, foreign = decode_config_entry(bad)
        assert [f.value for f in foreign] == [bad.hex()]


def _lb_raw(state: LoadBalancerState) -> lb_maps.RawLb:
    raw = lb_maps.RawLb(config=lb_maps.encode_node_config(state),
                        settings=lb_maps.settings_bytes(state.settings))
    raw.services = [(lb_maps.encode_frontend(f), lb_maps.encode_service(s))
                    for f, s in state.services.items()]
    raw.backends = [(struct.pack("<I", i), lb_maps.encode_backend(b)) for i, b in state.backends.items()]
    for s in state.services.values():
        raw.slots += [(lb_maps.encode_slot(s.service_id, i + 1), struct.pack("<I", b))
                      for i, b in enumerate(s.backends)]
        if s.maglev:
            raw.maglev[s.service_id] = struct.pack(f"<{len(s.maglev)}I", *s.maglev)
    return raw


def test_lb_round_trip_and_what_it_must_not_hide() -> None:
    from ipaddress import IPv4Address

    front = LbFrontend(IPv4Address("10.96.0.10"), 80, PROTO_TCP)
    state = LoadBalancerState(
        enabled=True, snat_address=IPv4Address("172.31.250.1"), settings="mode=snat algorithm=maglev",
        services=FrozenMap({front: LbService(1, (1, 2), (1, 2, 2, 1, 1, 2, 1))}),
        backends=FrozenMap({1: LbBackendEntry(IPv4Address("10.1.1.2"), 80, PROTO_TCP),
                            2: LbBackendEntry(IPv4Address("10.1.2.2"), 80, PROTO_TCP, True)}),
    )
    assert lb_maps.decode_lb(_lb_raw(state)) == (state, [])

    orphan_slot = _lb_raw(state)
    orphan_slot.slots.append((lb_maps.encode_slot(1, 3), struct.pack("<I", 1)))
    got, foreign = lb_maps.decode_lb(orphan_slot)
    assert got == state and [f.map for f in foreign] == ["lb_slots"]
    assert "slot 3 of service id 1" in explain(foreign[0])

    long_table = _lb_raw(state)  # a table longer than the service's maglev_size was truncated before
    long_table.maglev[1] += struct.pack("<I", 1)
    got, foreign = lb_maps.decode_lb(long_table)
    assert front not in got.services and "lb_services" in [f.map for f in foreign]

    stray = _lb_raw(LoadBalancerState())
    stray.config = lb_maps.encode_node_config(LoadBalancerState(snat_address=IPv4Address("1.2.3.4")))
    got, foreign = lb_maps.decode_lb(stray)
    assert got == LoadBalancerState() and [f.map for f in foreign] == ["lb_config"]

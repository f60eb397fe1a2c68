"""Pure struct <-> NodeState value codecs of meshctl.dataplane.maps (no kernel needed)."""

from __future__ import annotations

import ctypes
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from meshctl.dataplane import structs as S
from meshctl.dataplane.maps import (
    decode_config,
    decode_endpoint,
    decode_ipcache,
    decode_metrics,
    decode_policy,
    encode_config,
    encode_endpoint,
    encode_ipcache,
    encode_policy,
)
from meshctl.nodestate import (
    PROTO_TCP,
    DatapathConfig,
    Direction,
    EndpointEntry,
    IpcacheEntry,
    PolicyEntry,
    PolicyKey,
)

u32 = st.integers(0, 2**32 - 1)


@st.composite
def policy_keys(draw: st.DrawFn) -> PolicyKey:
    direction = draw(st.sampled_from(list(Direction)))
    identity = draw(u32)
    proto = draw(st.sampled_from([0, 1, 6, 17, 132]))
    if proto == 0:
        return PolicyKey(direction, identity)
    plen = draw(st.integers(0, 16))
    port = draw(st.integers(0, 65535)) & ~((1 << (16 - plen)) - 1)
    return PolicyKey(direction, identity, proto, port, plen)


@given(policy_keys(), u32, st.booleans())
def test_policy_roundtrip(key: PolicyKey, cookie: int, deny: bool) -> None:
    k, v = encode_policy(key, PolicyEntry(cookie, deny))
    assert len(k) == ctypes.sizeof(S.PolicyKey) and len(v) == ctypes.sizeof(S.PolicyValue)
    assert decode_policy(k, v) == (key, PolicyEntry(cookie, deny))
    assert v[5:] == b"\0\0\0"


def test_policy_key_layout_is_the_lpm_encoding() -> None:
    k, _ = encode_policy(PolicyKey(Direction.EGRESS, 300, PROTO_TCP, 8080, 13), PolicyEntry(1))
    want = (61).to_bytes(4, "little") + (300).to_bytes(4, "little") + bytes([1, 6])
    want += (8080).to_bytes(2, "big")
    assert k == want
    k, _ = encode_policy(PolicyKey(Direction.INGRESS, 0), PolicyEntry(1))
    assert k[:4] == (40).to_bytes(4, "little") and k[8:] == b"\0\0\0\0"


@given(u32, st.integers(0, 32), u32)
def test_ipcache_roundtrip(addr: int, plen: int, identity: int) -> None:
    net = IPv4Network((addr, plen), strict=False)
    k, v = encode_ipcache(net, IpcacheEntry(identity))
    assert k[4:] == net.network_address.packed  # __be32 in network order
    assert decode_ipcache(k, v) == (net, IpcacheEntry(identity))


@given(u32, u32, u32, st.booleans(), st.booleans())
def test_endpoint_roundtrip(addr: int, ep: int, ident: int, ing: bool, eg: bool) -> None:
    entry = EndpointEntry(ep, ident, ing, eg)
    k, v = encode_endpoint(IPv4Address(addr), entry)
    assert k == IPv4Address(addr).packed
    assert decode_endpoint(k, v) == (IPv4Address(addr), entry)


def test_config_decodes_exactly_what_is_stored() -> None:
    """A zeroed config (the datapath then uses its defaults) is not the config apply writes:
    it decodes as zeros, so the plan shows the write instead of hiding it."""
    assert decode_config(None) == DatapathConfig()
    assert decode_config(bytes(24)) == DatapathConfig(False, 0, 0, 0, 0)
    cfg = DatapathConfig(ipv6_pass=True, ct_timeout_tcp_s=5, ct_timeout_non_tcp_s=6, ct_timeout_syn_s=7,
                         ct_timeout_close_s=8)
    assert decode_config(encode_config(cfg)) == cfg
    proxied = DatapathConfig(proxy=True)
    assert decode_config(encode_config(proxied)) == proxied != DatapathConfig()
    # the flag only where it is set: a node without L7 ports keeps its fingerprint
    assert "proxy" not in DatapathConfig().canonical() and proxied.canonical()["proxy"] is True


def test_metrics_sum_over_cpus() -> None:
    key = bytes(S.MetricsKey(verdict=2, reason=3, direction=1))
    values = (S.MetricsValue * 3)(S.MetricsValue(1, 10), S.MetricsValue(2, 20), S.MetricsValue(0, 0))
    k, total = decode_metrics(key, bytes(values), 3)
    assert (k.verdict, k.reason, k.direction, total.packets, total.bytes) == (2, 3, 1, 3, 30)

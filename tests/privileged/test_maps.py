"""Typed map wrappers on real pinned maps: NodeState values in, the same values out."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from bd_helpers import compile_fixture, ensure_bpffs, unique

from meshctl.dataplane import structs as S
from meshctl.dataplane.libbpf import Map, Program
from meshctl.dataplane.maps import (
    CtMap,
    EndpointsMap,
    IpcacheMap,
    MetricsMap,
    PolicyMaps,
    encode_policy,
)
from meshctl.dataplane.node import NodeDatapath
from meshctl.errors import CompileError
from meshctl.nodestate import (
    PROTO_TCP,
    PROTO_UDP,
    Direction,
    EndpointEntry,
    IpcacheEntry,
    PolicyEntry,
    PolicyKey,
)

pytestmark = pytest.mark.privileged

POLICY = {
    PolicyKey(Direction.EGRESS, 7, PROTO_TCP, 80, 16): PolicyEntry(11, deny=False),
    PolicyKey(Direction.EGRESS, 0, PROTO_UDP, 53, 16): PolicyEntry(12),
    PolicyKey(Direction.INGRESS, 300): PolicyEntry(13),
    PolicyKey(Direction.INGRESS, 301, PROTO_TCP, 0, 0): PolicyEntry(14),
    PolicyKey(Direction.INGRESS, 0, PROTO_TCP, 8080, 13): PolicyEntry(15, deny=True),
}


@pytest.fixture(scope="module")
def dp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeDatapath]:
    ensure_bpffs()
    obj = compile_fixture("mini_datapath", tmp_path_factory.mktemp("mapsobj"))
    d = NodeDatapath(unique("t-bd-maps"), "n1", None, obj)
    d.ensure_loaded()
    try:
        yield d
    finally:
        d.remove()


def test_ipcache_roundtrip_and_remove(dp: NodeDatapath) -> None:
    entries = {
        IPv4Network("0.0.0.0/0"): IpcacheEntry(2),
        IPv4Network("10.0.0.0/8"): IpcacheEntry(16777217),
        IPv4Network("10.1.2.3/32"): IpcacheEntry(256, flags=0),
        IPv4Network("192.168.4.0/22"): IpcacheEntry(300),
    }
    with IpcacheMap.from_dir(dp.pin_dir) as m:
        m.upsert(entries)
        assert m.read() == entries
        m.remove([IPv4Network("10.0.0.0/8"), IPv4Network("1.2.3.0/24")])  # missing one ignored
        assert set(m.read()) == set(entries) - {IPv4Network("10.0.0.0/8")}
        m.remove(list(entries))
        assert m.read() == {}


def test_endpoints_roundtrip_with_flags(dp: NodeDatapath) -> None:
    entries = {
        IPv4Address("10.77.0.2"): EndpointEntry(1, 256, True, False),
        IPv4Address("10.77.1.2"): EndpointEntry(2, 257, False, True),
        IPv4Address("10.77.2.2"): EndpointEntry(3, 258, True, True),
    }
    with EndpointsMap.from_dir(dp.pin_dir) as m:
        m.upsert(entries)
        assert m.read() == entries
        raw = dict(m.map.items())
        key = bytes([10, 77, 1, 2])  # __be32: network order in memory
        assert S.EndpointValue.from_buffer_copy(raw[key]).flags == S.EndpointFlags.ENFORCE_EGRESS
        m.remove(list(entries))
        assert m.read() == {}


def test_policy_swap_replaces_the_whole_inner_map(dp: NodeDatapath) -> None:
    with PolicyMaps.from_dir(dp.pin_dir) as pm:
        pm.swap(5, POLICY)
        pm.swap(6, {})
        assert pm.read() == {5: POLICY, 6: {}}
        first_id = struct.unpack("<I", pm.map.lookup(struct.pack("<I", 5)) or b"")[0]
        smaller = dict(list(POLICY.items())[:2])
        pm.swap(5, smaller)
        second_id = struct.unpack("<I", pm.map.lookup(struct.pack("<I", 5)) or b"")[0]
        assert second_id != first_id and pm.read()[5] == smaller
        time.sleep(0.05)  # inner maps are freed after an RCU grace period
        with pytest.raises(Exception):  # noqa: B017 - the old inner map is gone
            Map.from_id(first_id)
        pm.remove([5, 6, 99])
        assert pm.read() == {}


def test_swap_over_capacity_fails_before_touching_the_kernel(dp: NodeDatapath) -> None:
    too_many = {PolicyKey(Direction.INGRESS, 1000 + i): PolicyEntry(1) for i in range(S.POLICY_MAP_SIZE + 1)}
    with PolicyMaps.from_dir(dp.pin_dir) as pm:
        pm.swap(9, POLICY)
        with pytest.raises(CompileError, match="capacity"):
            pm.swap(9, too_many)
        assert pm.read() == {9: POLICY}
        pm.remove([9])


def test_datapath_matches_port_prefixes_of_swapped_policy(dp: NodeDatapath) -> None:
    """The fixture drops when endpoint 1's policy has a deny matching (7, egress, tcp/80)."""
    prog = Program.from_pin(dp.prog_pin("from-pod"))
    try:
        with PolicyMaps.from_dir(dp.pin_dir) as pm:
            pm.swap(1, {PolicyKey(Direction.EGRESS, 7, PROTO_TCP, 64, 10): PolicyEntry(1, deny=True)})
            assert prog.test_run(b"\0" * 60).retval == 2  # 64..127 covers 80
            pm.swap(1, {PolicyKey(Direction.EGRESS, 7, PROTO_TCP, 128, 9): PolicyEntry(1, deny=True)})
            assert prog.test_run(b"\0" * 60).retval == 0  # 0..127? no: 128..255 misses 80
            pm.swap(1, {PolicyKey(Direction.EGRESS, 7, PROTO_TCP, 0, 0): PolicyEntry(1, deny=True)})
            assert prog.test_run(b"\0" * 60).retval == 2  # all ports
            pm.remove([1])
    finally:
        prog.close()


def test_encoded_pad_bytes_are_zero() -> None:
    key, value = encode_policy(PolicyKey(Direction.EGRESS, 0xFFFFFFFF, PROTO_TCP, 0xFFFF, 16),
                               PolicyEntry(0xFFFFFFFF, deny=True))
    assert value[5:] == b"\0\0\0"
    assert key == struct.pack("<IIBB", 64, 0xFFFFFFFF, 1, 6) + b"\xff\xff"


def test_ct_read_and_flush(dp: NodeDatapath) -> None:
    with CtMap.from_dir(dp.pin_dir) as ct:
        key = S.CtKey(saddr_be=int.from_bytes(bytes([10, 0, 0, 1]), "little"),
                      daddr_be=int.from_bytes(bytes([10, 0, 0, 2]), "little"),
                      sport_be=int.from_bytes((4000).to_bytes(2, "big"), "little"),
                      dport_be=int.from_bytes((80).to_bytes(2, "big"), "little"), protocol=6, direction=1)
        ct.map.update(bytes(key), bytes(S.CtValue(expires_ns=5, packets=3, bytes=180, cookie=7, flags=1)))
        (entry,) = ct.read()
        got = (str(entry.saddr), str(entry.daddr), entry.sport, entry.dport)
        assert got == ("10.0.0.1", "10.0.0.2", 4000, 80)
        assert (entry.direction, entry.packets, entry.cookie) == (Direction.EGRESS, 3, 7)
        assert ct.flush() == 1 and ct.read() == []


def test_metrics_open_and_sum(dp: NodeDatapath) -> None:
    metrics = MetricsMap.open(dp.cluster, dp.node)
    assert metrics is not None
    with metrics, Program.from_pin(dp.prog_pin("to-pod")) as prog:
        metrics.map.clear()
        prog.test_run(b"\0" * 100, repeat=4)
        ((key, total),) = metrics.items()
        assert (key.verdict, key.reason, key.direction) == (S.Verdict.FORWARDED, 0, 0)
        assert (total.packets, total.bytes) == (4, 400)
    assert MetricsMap.open(dp.cluster, "no-such-node") is None


def test_bulk_ipcache_write_and_read_speed(dp: NodeDatapath, record_property: pytest.RecordProperty) -> None:
    n = 10_000
    entries = {IPv4Network((0x0B000000 + i, 32)): IpcacheEntry((1 << 24) + i) for i in range(n)}
    with IpcacheMap.from_dir(dp.pin_dir) as m:
        t0 = time.perf_counter()
        m.upsert(entries)
        t1 = time.perf_counter()
        got = m.read()
        t2 = time.perf_counter()
        m.remove(list(entries))
        t3 = time.perf_counter()
    assert got == entries
    record_property("ipcache_write_us_per_entry", (t1 - t0) / n * 1e6)
    record_property("ipcache_read_us_per_entry", (t2 - t1) / n * 1e6)
    record_property("ipcache_delete_us_per_entry", (t3 - t2) / n * 1e6)
    print(f"ipcache 10k: write {(t1 - t0) * 1e3:.1f} ms, read {(t2 - t1) * 1e3:.1f} ms, "
          f"delete {(t3 - t2) * 1e3:.1f} ms")



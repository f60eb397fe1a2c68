"""The libbpf ctypes binding against real maps and programs (a tiny object built here)."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from bd_helpers import PIN_ROOT, compile_fixture, ensure_bpffs, unique

from meshctl.dataplane import structs as S
from meshctl.dataplane.libbpf import (
    BPF_F_NO_PREALLOC,
    BPF_MAP_TYPE_HASH,
    BPF_MAP_TYPE_HASH_OF_MAPS,
    BPF_MAP_TYPE_LPM_TRIE,
    BPF_MAP_TYPE_PERCPU_HASH,
    BPF_NOEXIST,
    BpfObject,
    Map,
    Program,
    num_possible_cpus,
)
from meshctl.dataplane.ringbuf import RingBufferReader, drain
from meshctl.errors import DataplaneError

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def objdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bpfobj")


@pytest.fixture(scope="module")
def obj(objdir: Path) -> Iterator[BpfObject]:
    ensure_bpffs()
    o = BpfObject.open(compile_fixture("mini_datapath", objdir))
    try:
        o.load()
        yield o
    finally:
        o.close()


@pytest.fixture()
def pin_dir() -> Iterator[Path]:
    d = PIN_ROOT / unique("t-bd-lib")
    d.mkdir(parents=True)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def ep_key(i: int) -> bytes:
    return bytes(S.EndpointKey(addr_be=i))


def ep_val(i: int) -> bytes:
    return bytes(S.EndpointValue(endpoint_id=i, identity=256 + i, flags=1))


def test_object_lists_maps_and_programs(obj: BpfObject) -> None:
    names = {"config", "endpoints", "ipcache", "policy_maps", "ct", "events", "metrics"}
    assert names <= set(obj.map_names())
    assert obj.program_names() == ["from_pod", "to_pod"]
    ipc = obj.map("ipcache")
    assert (ipc.map_type, ipc.key_size, ipc.value_size, ipc.flags) == (
        BPF_MAP_TYPE_LPM_TRIE, ctypes.sizeof(S.IpcacheKey), ctypes.sizeof(S.IpcacheValue), BPF_F_NO_PREALLOC)
    assert ipc.max_entries == S.IPCACHE_MAP_SIZE


def test_single_entry_ops_and_missing_keys(obj: BpfObject) -> None:
    m = obj.map("endpoints")
    assert m.lookup(ep_key(0xDEAD)) is None
    m.update(ep_key(0xDEAD), ep_val(1))
    assert m.lookup(ep_key(0xDEAD)) == ep_val(1)
    with pytest.raises(DataplaneError) as exc:
        m.update(ep_key(0xDEAD), ep_val(2), BPF_NOEXIST)
    assert exc.value.errno == errno.EEXIST and "endpoints" in str(exc.value)
    assert m.delete(ep_key(0xDEAD)) is True
    assert m.delete(ep_key(0xDEAD)) is False
    with pytest.raises(ValueError):
        m.lookup(b"\x00")


def test_batch_update_lookup_delete_on_hash(obj: BpfObject) -> None:
    m = obj.map("endpoints")
    n = 3000
    keys = [ep_key(i) for i in range(1, n + 1)]
    vals = [ep_val(i) for i in range(1, n + 1)]
    m.update_batch(keys, vals)
    try:
        got = dict(m.lookup_batch(chunk=256))
        assert got == dict(zip(keys, vals, strict=True))
        assert sorted(m.keys()) == sorted(keys)
        m.delete_batch([*keys[:100], ep_key(16777215)])  # a missing key is ignored
        assert len(m.items()) == n - 100
    finally:
        m.clear()
    assert m.items() == []


def test_lpm_trie_batch_falls_back_per_entry(obj: BpfObject) -> None:
    m = obj.map("ipcache")
    keys = [bytes(S.IpcacheKey(prefixlen=24, addr_be=struct.unpack("<I", bytes([10, 0, i, 0]))[0]))
            for i in range(50)]
    vals = [bytes(S.IpcacheValue(identity=300 + i)) for i in range(50)]
    m.update_batch(keys, vals)
    try:
        assert dict(m.items()) == dict(zip(keys, vals, strict=True))
    finally:
        m.delete_batch(keys)
    assert m.items() == []


def test_percpu_values_span_every_cpu(obj: BpfObject) -> None:
    m = obj.map("metrics")
    ncpu = num_possible_cpus()
    assert m.map_type == BPF_MAP_TYPE_PERCPU_HASH
    assert m.value_buf_size == 16 * ncpu
    m.clear()
    obj.program("from_pod").test_run(b"\x00" * 60, repeat=7)
    (key, value), = m.items()
    k = S.MetricsKey.from_buffer_copy(key)
    assert (k.verdict, k.direction) == (S.Verdict.FORWARDED, 1)
    per_cpu = (S.MetricsValue * ncpu).from_buffer_copy(value)
    assert sum(v.packets for v in per_cpu) == 7
    assert sum(v.bytes for v in per_cpu) == 7 * 60


def test_create_pin_reopen_by_pin_and_id(pin_dir: Path) -> None:
    with Map.create(BPF_MAP_TYPE_HASH, 4, 8, 16, name="t_bd_pin") as m:
        m.update(b"abcd", b"12345678")
        m.pin(pin_dir / "m")
        map_id = m.id
    with Map.from_pin(pin_dir / "m") as again:
        assert again.lookup(b"abcd") == b"12345678" and again.name == "t_bd_pin"
    with Map.from_id(map_id) as by_id:
        assert by_id.lookup(b"abcd") == b"12345678"
    with pytest.raises(DataplaneError) as exc:
        Map.from_pin(pin_dir / "missing")
    assert exc.value.errno == errno.ENOENT and "missing" in str(exc.value)


def test_hash_of_maps_swap_is_seen_by_the_program(obj: BpfObject) -> None:
    outer = obj.map("policy_maps")
    assert outer.map_type == BPF_MAP_TYPE_HASH_OF_MAPS
    prog = obj.program("from_pod")
    key = bytes(S.PolicyKey(prefixlen=S.POLICY_PREFIX_FULL, identity=7, egress=1, protocol=6,
                            dport_be=0x5000))
    inner_map = Map.create(BPF_MAP_TYPE_LPM_TRIE, 12, 8, S.POLICY_MAP_SIZE, BPF_F_NO_PREALLOC, "t_bd_inner")
    with inner_map as inner:
        inner.update(key, bytes(S.PolicyValue(cookie=9, flags=S.PolicyFlags.DENY)))
        outer.update(struct.pack("<I", 1), struct.pack("<I", inner.fd))
        inner_id = inner.id
    try:
        assert outer.lookup(struct.pack("<I", 1)) == struct.pack("<I", inner_id)
        with Map.from_id(inner_id) as again:  # the outer map keeps the inner one alive
            assert [S.PolicyValue.from_buffer_copy(v).cookie for _, v in again.items()] == [9]
        assert prog.test_run(b"\x00" * 60).retval == 2
    finally:
        outer.delete(struct.pack("<I", 1))
    assert prog.test_run(b"\x00" * 60).retval == 0


def test_program_info_pin_and_test_run(obj: BpfObject, pin_dir: Path) -> None:
    prog = obj.program("to_pod")
    info = prog.info()
    assert info.name == "to_pod" and len(info.tag) == 16
    assert obj.map("endpoints").id not in info.map_ids
    assert obj.map("policy_maps").id in info.map_ids
    prog.pin(pin_dir / "to_pod")
    again = Program.from_pin(pin_dir / "to_pod")
    try:
        assert again.info().id == info.id
        res = again.test_run(bytes(range(60)))
        assert res.retval == 0 and res.data_out == bytes(range(60))
    finally:
        again.close()


def test_ringbuf_delivers_event_copies(obj: BpfObject) -> None:
    drain(obj.map("events"))
    obj.program("to_pod").test_run(b"\x00" * 80, repeat=3)
    events = drain(obj.map("events"))
    assert len(events) == 3
    assert all(e.length == 80 and e.direction == 0 and e.dport_be == 0x5000 for e in events)
    assert events[0].timestamp_ns <= events[-1].timestamp_ns
    assert drain(obj.map("events")) == []


def test_verifier_log_is_attached_to_the_load_error(objdir: Path) -> None:
    bad = BpfObject.open(compile_fixture("broken", objdir))
    try:
        with pytest.raises(DataplaneError) as exc:
            bad.load()
    finally:
        bad.close()
    msg = str(exc.value)
    assert "load BPF object" in msg and "broken-0.o" in msg
    assert "invalid access to packet" in msg  # the verifier's own words


def test_open_missing_object_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataplaneError) as exc:
        BpfObject.open(tmp_path / "nope.o")
    assert "nope.o" in str(exc.value) and exc.value.errno == errno.ENOENT


def test_closed_fds_do_not_leak(obj: BpfObject) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with Map.from_id(obj.map("ct").id) as m:
            assert m.key_size == ctypes.sizeof(S.CtKey)
    assert len(os.listdir("/proc/self/fd")) == before


def test_ringbuf_poll_and_callback_errors_propagate(obj: BpfObject) -> None:
    events = obj.map("events")
    drain(events)
    obj.program("from_pod").test_run(b"\x00" * 70, repeat=2)
    got: list[int] = []
    with RingBufferReader(events, lambda ev: got.append(ev.length)) as reader:
        assert reader.poll(200) == 2
        assert reader.poll(0) == 0
    assert got == [70, 70]

    def boom(_: object) -> None:
        raise RuntimeError("consumer failed")

    obj.program("from_pod").test_run(b"\x00" * 70)
    with RingBufferReader(events, boom) as reader, pytest.raises(RuntimeError, match="consumer failed"):
        reader.consume()
    drain(events)

"""NodeDatapath: load once, pin, reload keeping entries, attach on real veths with real TCP."""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bd_helpers import REPO, NodeNet, compile_fixture, ensure_bpffs, node_net, tcp_connects, unique

from meshctl.dataplane.libbpf import BPF_TCX_EGRESS, BPF_TCX_INGRESS, Link, Map, Program
from meshctl.dataplane.maps import ConfigMap, MetricsMap
from meshctl.dataplane.node import MAP_NAMES, NodeDatapath, build_hash, default_object_path
from meshctl.dataplane.ringbuf import drain
from meshctl.dataplane.structs import DatapathConfig
from meshctl.errors import DataplaneError

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("nodeobj")
    return compile_fixture("mini_datapath", d, 0), compile_fixture("mini_datapath", d, 1)


@pytest.fixture(scope="module")
def net() -> Iterator[NodeNet]:
    ensure_bpffs()
    with node_net(npods=2) as n:
        yield n


@pytest.fixture()
def dp(objects: tuple[Path, Path], net: NodeNet) -> Iterator[NodeDatapath]:
    d = NodeDatapath(unique("t-bd-node"), "n1", net.ns, objects[0])
    try:
        yield d
    finally:
        d.remove()
        assert not d.pin_dir.exists()


def set_config_flags(dp: NodeDatapath, flags: int) -> None:
    with Map.from_pin(dp.map_pin("config")) as m:
        m.update(b"\0\0\0\0", bytes(DatapathConfig(flags=flags)))


def test_ensure_loaded_pins_once(dp: NodeDatapath, objects: tuple[Path, Path]) -> None:
    assert not dp.exists() and dp.pinned_build() is None
    assert dp.ensure_loaded() is True
    for name in MAP_NAMES:
        assert dp.map_pin(name).exists(), name
    assert dp.prog_pin("from-pod").exists() and dp.prog_pin("to-pod").exists()
    assert dp.pinned_build() == build_hash(objects[0]) == dp.build
    assert dp.ensure_loaded() is False  # same build: nothing to do


def test_reload_keeps_entries_and_switches_programs(dp: NodeDatapath, objects: tuple[Path, Path]) -> None:
    dp.ensure_loaded()
    with Map.from_pin(dp.map_pin("ipcache")) as m:
        m.update(struct.pack("<II", 32, 0x0100000A), struct.pack("<II", 300, 0))
        ipcache_id = m.id
    with Program.from_pin(dp.prog_pin("from-pod")) as p:
        old_prog = p.info().id
    upgraded = NodeDatapath(dp.cluster, dp.node, dp.netns, objects[1])
    assert upgraded.ensure_loaded() is True
    assert upgraded.pinned_build() == build_hash(objects[1]) != build_hash(objects[0])
    with Map.from_pin(dp.map_pin("ipcache")) as m:
        assert m.id == ipcache_id  # the same map, reused
        assert m.lookup(struct.pack("<II", 32, 0x0100000A)) == struct.pack("<II", 300, 0)
    with Program.from_pin(dp.prog_pin("from-pod")) as p:
        assert p.info().id != old_prog
    assert dp.is_loaded() is False  # dp still points at the older object


def test_attach_enforces_on_real_traffic_and_detach_undoes(dp: NodeDatapath, net: NodeNet) -> None:
    pod = net.pods[0]
    dp.ensure_loaded()
    dp.attach(pod.ifname, pod.pod_ip)
    pins = dp.link_pins()
    assert sorted((p.ifname, p.hook, p.endpoint) for p in pins) == [
        (pod.ifname, "from-pod", pod.pod_ip), (pod.ifname, "to-pod", pod.pod_ip)]
    for pin in pins:
        info = dp.link_info(pin)
        assert info.attach_type == {"from-pod": BPF_TCX_INGRESS, "to-pod": BPF_TCX_EGRESS}[pin.hook]
        assert info.ifindex > 0
    with Map.from_pin(dp.map_pin("events")) as events, MetricsMap(Map.from_pin(dp.map_pin("metrics"))) as mt:
        mt.map.clear()
        drain(events)
        assert tcp_connects(net.ns, pod.node_ip, pod.pod_ns)
        seen = drain(events)
        assert {e.direction for e in seen} == {0, 1}  # both hooks saw the handshake
        for _ in range(50):  # late packets (FIN, ND) may still be in flight: wait for quiet
            counted = sum(t.packets for t in mt.read().values())
            if counted == len(seen):
                break
            time.sleep(0.02)
            seen += drain(events)
        assert counted == len(seen)  # one event and one count per packet
    set_config_flags(dp, 2)  # the fixture returns config.flags: 2 = TC_ACT_SHOT
    assert not tcp_connects(net.ns, pod.node_ip, pod.pod_ns)
    dp.detach(pod.ifname)
    assert dp.link_pins() == []
    assert tcp_connects(net.ns, pod.node_ip, pod.pod_ns)  # no program on the veth any more


def test_attach_is_idempotent_and_follows_reload(dp: NodeDatapath, net: NodeNet,
                                                 objects: tuple[Path, Path]) -> None:
    pod = net.pods[1]
    dp.attach(pod.ifname, pod.pod_ip)  # loads on demand
    ids = sorted(dp.link_info(p).id for p in dp.link_pins())
    dp.attach(pod.ifname, pod.pod_ip)
    assert sorted(dp.link_info(p).id for p in dp.link_pins()) == ids
    upgraded = NodeDatapath(dp.cluster, dp.node, dp.netns, objects[1])
    upgraded.ensure_loaded()
    with Program.from_pin(dp.prog_pin("to-pod")) as p:
        new_prog = p.info().id
    to_pod = [p for p in dp.link_pins() if p.hook == "to-pod"]
    assert [dp.link_info(p).prog_id for p in to_pod] == [new_prog]
    assert sorted(dp.link_info(p).id for p in dp.link_pins()) == ids  # same links, new program
    set_config_flags(dp, 2)
    assert not tcp_connects(net.ns, pod.node_ip, pod.pod_ns)


def test_attach_moves_when_endpoint_ip_changes(dp: NodeDatapath, net: NodeNet) -> None:
    pod = net.pods[0]
    dp.attach(pod.ifname, pod.pod_ip)
    dp.attach(pod.ifname, "10.77.99.9")
    assert {str(p.endpoint) for p in dp.link_pins()} == {"10.77.99.9"}
    assert len(dp.link_pins()) == 2
    dp.detach_endpoint("10.77.99.9")
    assert dp.link_pins() == []


def test_attach_to_missing_device_is_a_clear_error(dp: NodeDatapath) -> None:
    with pytest.raises(DataplaneError) as exc:
        dp.attach("nosuchveth", "10.1.1.1")
    assert exc.value.errno == errno.ENODEV and "nosuchveth" in str(exc.value)


def test_links_survive_closing_every_fd(dp: NodeDatapath, net: NodeNet) -> None:
    pod = net.pods[0]
    dp.attach(pod.ifname, pod.pod_ip)
    set_config_flags(dp, 2)
    # attach() closed its fds: only the pins hold the links, and they still filter
    assert not tcp_connects(net.ns, pod.node_ip, pod.pod_ns)
    with Link.from_pin(dp.link_pins()[0].path) as link:
        assert link.info().ifindex > 0


def test_bad_names_are_rejected() -> None:
    with pytest.raises(DataplaneError, match=r"no '\.'"):
        NodeDatapath("t-bd-x", "node.1", None)


def test_config_map_roundtrip(dp: NodeDatapath) -> None:
    from meshctl.nodestate import DatapathConfig as Cfg

    dp.ensure_loaded()
    with ConfigMap.from_dir(dp.pin_dir) as cfg:
        assert cfg.read() == Cfg()  # zeroed map = the datapath's defaults
        cfg.write(Cfg(ipv6_pass=True, ct_timeout_tcp_s=77))
        assert cfg.read() == Cfg(ipv6_pass=True, ct_timeout_tcp_s=77)


def test_the_real_datapath_object_loads_and_pins() -> None:
    obj = default_object_path()
    if not obj.exists():
        pytest.skip(f"{obj} not built (make -C bpf)")
    assert obj == REPO / "bpf" / "build" / "datapath.o" or obj.exists()
    d = NodeDatapath(unique("t-bd-real"), "n1", None)
    try:
        assert d.ensure_loaded() is True
        assert all(d.map_pin(n).exists() for n in MAP_NAMES)
        assert d.pinned_build() == build_hash(obj)
    finally:
        d.remove()


def test_a_map_whose_layout_changed_is_recreated_and_the_others_kept(dp: NodeDatapath) -> None:
    """An object with a new struct ct_value (32 -> 40 bytes: the policy revision) loads over pins
    of the old layout: ct starts empty, every other map keeps its entries."""
    import ctypes

    from meshctl.dataplane.libbpf import BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH
    from meshctl.dataplane.structs import CT_MAP_SIZE, CtKey, CtValue, EndpointKey, EndpointValue

    dp.pin_dir.mkdir(parents=True)
    key_size = ctypes.sizeof(CtKey)
    with Map.create(BPF_MAP_TYPE_LRU_HASH, key_size, 32, CT_MAP_SIZE, name="ct") as old_ct:
        old_ct.update(b"\1" * key_size, b"\2" * 32)
        old_ct.pin(dp.map_pin("ct"))
    ep_key, ep_value = bytes(EndpointKey(addr_be=7)), bytes(EndpointValue(endpoint_id=3, identity=300))
    with Map.create(BPF_MAP_TYPE_HASH, len(ep_key), len(ep_value), 65536, name="endpoints") as eps:
        eps.update(ep_key, ep_value)
        eps.pin(dp.map_pin("endpoints"))
    assert dp.ensure_loaded() is True  # reused as is, ct would keep 32-byte values the program overruns
    with Map.from_pin(dp.map_pin("ct")) as ct:
        assert ct.value_size == ctypes.sizeof(CtValue) and list(ct.keys()) == []
    with Map.from_pin(dp.map_pin("endpoints")) as eps:
        assert eps.lookup(ep_key) == ep_value

"""observe_node: the live kernel state of a node as a NodeState (what compile would produce)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from bd_helpers import NodeNet, datapath_object, ensure_bpffs, node_net, unique

from meshctl.dataplane.libbpf import BpfObject, Link
from meshctl.dataplane.maps import ConfigMap, EndpointsMap, IpcacheMap, PolicyMaps
from meshctl.dataplane.node import NodeDatapath
from meshctl.nodestate import (
    PROTO_TCP,
    Attachment,
    DatapathConfig,
    Direction,
    EndpointEntry,
    FrozenMap,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.observe import observe_node

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return datapath_object()


@pytest.fixture(scope="module")
def net() -> Iterator[NodeNet]:
    ensure_bpffs()
    with node_net(npods=2) as n:
        yield n


@pytest.fixture()
def dp(obj: Path, net: NodeNet) -> Iterator[NodeDatapath]:
    d = NodeDatapath(unique("t-bd-obs"), "n1", net.ns, obj)
    try:
        yield d
    finally:
        d.remove()


def observe(dp: NodeDatapath) -> NodeState:
    return observe_node(dp.cluster, dp.node, dp.netns)


def test_a_node_never_loaded_observes_empty(dp: NodeDatapath) -> None:
    assert observe(dp) == NodeState("n1")


def test_a_freshly_loaded_node_observes_empty(dp: NodeDatapath) -> None:
    dp.ensure_loaded()
    state = observe(dp)
    assert state == NodeState("n1")
    assert state.fingerprint() == NodeState("n1").fingerprint()


def test_observe_reads_every_map_and_attachment(dp: NodeDatapath, net: NodeNet) -> None:
    dp.ensure_loaded()
    pod0, pod1 = net.pods
    cfg = DatapathConfig(ipv6_pass=True, ct_timeout_tcp_s=3600)
    ipcache = {IPv4Network(f"{pod0.pod_ip}/32"): IpcacheEntry(256), IPv4Network("0.0.0.0/0"): IpcacheEntry(2)}
    endpoints = {
        pod0.pod_ip: EndpointEntry(1, 256, True, False),
        pod1.pod_ip: EndpointEntry(2, 257, False, False),
    }
    policies = {1: {PolicyKey(Direction.INGRESS, 257, PROTO_TCP, 8080, 16): PolicyEntry(42)}, 2: {}}
    with ConfigMap.from_dir(dp.pin_dir) as m:
        m.write(cfg)
    with IpcacheMap.from_dir(dp.pin_dir) as m:
        m.upsert(ipcache)
    with EndpointsMap.from_dir(dp.pin_dir) as m:
        m.upsert(endpoints)
    with PolicyMaps.from_dir(dp.pin_dir) as m:
        for ep, entries in policies.items():
            m.swap(ep, entries)
    dp.attach(pod0.ifname, pod0.pod_ip)
    expected = NodeState(
        "n1", cfg, FrozenMap(ipcache), FrozenMap(endpoints),
        FrozenMap({ep: FrozenMap(e) for ep, e in policies.items()}),
        frozenset({Attachment(pod0.pod_ip, hook, dp.build) for hook in ("from-pod", "to-pod")}),
    )
    assert observe(dp) == expected
    assert observe(dp).fingerprint() == expected.fingerprint()


def test_attachment_of_a_deleted_veth_is_not_observed(dp: NodeDatapath, net: NodeNet) -> None:
    pod = net.add_pod(7)
    dp.attach(pod.ifname, pod.pod_ip)
    assert {a.endpoint for a in observe(dp).attachments} == {pod.pod_ip}
    subprocess.run(["ip", "-n", net.ns, "link", "del", pod.ifname], check=True)
    assert observe(dp).attachments == frozenset()


def test_attachment_running_a_foreign_program_reports_unknown_build(
    dp: NodeDatapath, net: NodeNet, obj: Path
) -> None:
    pod = net.pods[1]
    dp.attach(pod.ifname, pod.pod_ip)
    with BpfObject.open(obj) as other:
        other.load()
        prog = other.program("from_pod")
        pin = next(p for p in dp.link_pins() if p.hook == "from-pod")
        with Link.from_pin(pin.path) as link:
            link.update(prog.fd)
        builds = {a.hook: a.build for a in observe(dp).attachments}
    assert builds["to-pod"] == dp.build
    assert builds["from-pod"].startswith("unknown:prog-")


def test_endpoint_ip_survives_in_link_pin_names(dp: NodeDatapath, net: NodeNet) -> None:
    pod = net.pods[0]
    dp.attach(pod.ifname, pod.pod_ip)
    assert {p.path.name for p in dp.link_pins()} == {
        f"from-pod@{str(pod.pod_ip).replace('.', '-')}", f"to-pod@{str(pod.pod_ip).replace('.', '-')}"}
    assert all(a.endpoint == IPv4Address(pod.pod_ip) for a in observe(dp).attachments)

"""The lab's external client (kubeProxyReplacement): on the underlay, routes via a node, removed by down."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest
from lab_helpers import lab, two_node_topology, unique

from meshctl.errors import LabError
from meshctl.lab import cluster, names, network, probe, registry
from meshctl.lab.netns import entered, exists, ip

pytestmark = pytest.mark.privileged

NAME = unique("t-lbi-ext")
LB_IP = IPv4Network("192.0.2.50/32")


@pytest.fixture(scope="module")
def ext_lab() -> Iterator[cluster.UpResult]:
    topo = dataclasses.replace(two_node_topology(NAME, pods=()), external=True, external_routes=(LB_IP,))
    with lab(topo) as res:
        yield res


def _serve_once(netns: str, addr: str, port: int, reply: bytes) -> threading.Thread:
    with entered(netns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    srv.settimeout(3)

    def run() -> None:
        try:
            conn, _ = srv.accept()
            conn.recv(4096)  # the probe asks as curl does: read its request, then answer
            conn.sendall(reply)
            conn.close()
        finally:
            srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_external_client_is_recorded_and_on_the_underlay(ext_lab: cluster.UpResult) -> None:
    ext = registry.require(NAME).external
    assert ext is not None
    assert ext.netns == names.external_netns(NAME) == f"mc-{NAME}-ext" and exists(ext.netns)
    assert ext.underlay_ip == "172.31.251.254"  # last usable address: node addresses never move
    assert ext.via_node == "n1" and ext.routes == [str(LB_IP)]
    routes = json.loads(ip(ext.netns, "-j", "route", "show", str(LB_IP)).stdout)
    assert routes and routes[0]["gateway"] == ext_lab.registry.nodes["n1"].underlay_ip


def test_external_client_reaches_a_node_underlay_address(ext_lab: cluster.UpResult) -> None:
    node = ext_lab.registry.nodes["n2"]
    t = _serve_once(node.netns, node.underlay_ip, 30080, b"node n2\n")
    res = probe.connect_external(NAME, node.underlay_ip, 30080)
    t.join(3)
    assert res.ok, res.error
    assert res.reply == "node n2"


def test_service_address_is_routed_to_the_via_node(ext_lab: cluster.UpResult) -> None:
    # Until the datapath translates it, the via node answers the LB address if it owns it.
    node = ext_lab.registry.nodes["n1"]
    ip(node.netns, "addr", "add", f"{LB_IP.network_address}/32", "dev", "lo")
    try:
        t = _serve_once(node.netns, str(LB_IP.network_address), 80, b"via n1\n")
        res = probe.connect_external(NAME, LB_IP.network_address, 80)
        t.join(3)
        assert res.ok, res.error
        assert res.reply == "via n1"
    finally:
        ip(node.netns, "addr", "del", f"{LB_IP.network_address}/32", "dev", "lo", check=False)


def test_up_again_is_idempotent_and_updates_routes(ext_lab: cluster.UpResult) -> None:
    other = IPv4Network("198.51.100.7/32")
    topo = dataclasses.replace(two_node_topology(NAME, pods=()), external=True, external_routes=(other,))
    cluster.up(topo, with_datapath=False)
    ext = registry.require(NAME).external
    assert ext is not None and ext.routes == [str(other)]
    shown = ip(ext.netns, "route", "show", "proto", network.LAB_RTPROTO).stdout
    assert "198.51.100.7" in shown and "192.0.2.50" not in shown


def test_no_external_client_without_kube_proxy_replacement() -> None:
    name = unique("t-lbi-noext")
    with lab(two_node_topology(name, pods=())):
        assert registry.require(name).external is None
        assert not exists(names.external_netns(name))
        with pytest.raises(LabError, match="kubeProxyReplacement"):
            probe.connect_external(name, "172.31.251.1", 80)


def test_down_removes_the_external_client() -> None:
    name = unique("t-lbi-ext2")
    topo = dataclasses.replace(two_node_topology(name, pods=()), external=True)
    cluster.up(topo, with_datapath=False)
    try:
        assert exists(names.external_netns(name))
    finally:
        res = cluster.down(name, ("n1", "n2"))
    assert names.external_netns(name) in res.netns
    assert not exists(names.external_netns(name))
    assert registry.load(name) is None


def test_down_after_losing_the_registry_still_finds_it() -> None:
    name = unique("t-lbi-ext3")
    topo = dataclasses.replace(two_node_topology(name, pods=()), external=True)
    cluster.up(topo, with_datapath=False)
    registry.delete(name)
    cluster.down(name, ("n1", "n2"))
    assert not exists(names.external_netns(name))

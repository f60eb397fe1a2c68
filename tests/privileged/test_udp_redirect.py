"""The datapath's UDP redirect (bpf/lib/proxy.h proxy_redirect_udp): the base of the DNS proxy.

A lab with a client pod (node-1) and kube-dns (node-2). The client's policy map gets one entry by
hand: egress to kube-dns on 53/UDP, allowed with a proxy port. A transparent UDP socket in
node-1's netns stands in for the proxy: every datagram of the flow reaches it (the second one
too, not only the first), with its original destination; its answer, sent from the original
destination's address, reaches the client as a reply; with no socket, the datagram is dropped
and counted as PROXY_DOWN (fail closed, never to kube-dns unchecked).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from apply_helpers import cli_lab, inline_repo, unique_cluster

from meshctl.dataplane.maps import EndpointsMap, IpcacheMap, MetricsMap, PolicyMaps
from meshctl.dataplane.netns import in_netns
from meshctl.dataplane.node import node_pin_dir
from meshctl.dataplane.proxyroute import ensure_proxy_routing
from meshctl.lab import registry
from meshctl.nodestate import PROTO_UDP, Direction, EndpointEntry, PolicyEntry, PolicyKey

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-udp-redir")
PROXY_PORT = 15053
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
REASON_PROXY_DOWN = 8
REASON_PROXY_REDIRECT = 10
TOML = f"""[cluster]
name = "{CLUSTER}"
[[nodes]]
name = "node-1"
podCIDR = "10.233.1.0/24"
[[nodes]]
name = "node-2"
podCIDR = "10.233.2.0/24"
"""
PODS = """apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: kube-system, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: c, image: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  nodeName: node-2
  containers: [{name: d, image: coredns, ports: [{containerPort: 53, protocol: UDP}]}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(client address, kube-dns address, node-1 netns), the client's egress sent to the proxy."""
    with cli_lab(inline_repo(tmp_path_factory.mktemp("udpredir") / "repo", TOML, PODS)):
        reg = registry.require(CLUSTER)
        client, dns = reg.pods["kube-system/client"], reg.pods["kube-system/kube-dns"]
        pins = node_pin_dir(CLUSTER, "node-1")
        with IpcacheMap.from_dir(pins) as ipcache, EndpointsMap.from_dir(pins) as endpoints, \
                PolicyMaps.from_dir(pins) as policies:
            dns_identity = ipcache.read()[IPv4Network(f"{dns.ip}/32")].identity
            ep = endpoints.read()[IPv4Address(client.ip)]
            enforced = EndpointEntry(ep.endpoint_id, ep.identity, False, True)
            endpoints.upsert({IPv4Address(client.ip): enforced})
            key = PolicyKey(Direction.EGRESS, dns_identity, PROTO_UDP, 53, 16)
            policies.swap(ep.endpoint_id, {key: PolicyEntry(77, False, PROXY_PORT)})
        ensure_proxy_routing(reg.nodes["node-1"].netns)
        yield client.ip, dns.ip, reg.nodes["node-1"].netns


def _proxy_socket(netns: str) -> socket.socket:
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        sock.bind(("127.0.0.1", PROXY_PORT))
    sock.settimeout(3)
    return sock


def _receive(proxy: socket.socket) -> tuple[bytes, tuple[str, int], tuple[str, int]]:
    """(payload, sender, original destination) of one datagram the datapath assigned."""
    data, ancillary, _flags, sender = proxy.recvmsg(2048, socket.CMSG_SPACE(16))
    (level, kind, raw), = ancillary
    assert (level, kind) == (socket.SOL_IP, IP_RECVORIGDSTADDR)
    port, addr = struct.unpack_from("!2xH4s", raw)
    return data, sender, (socket.inet_ntoa(addr), port)


def _answer_from(netns: str, source: tuple[str, int], to: tuple[str, int], payload: bytes) -> None:
    """Send as `source` (an address of another node's pod): what the DNS proxy does."""
    with in_netns(netns):
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        out.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        out.bind(source)
    with out:
        out.sendto(payload, to)


def _metric(reason: int) -> int:
    metrics = MetricsMap.open(CLUSTER, "node-1")
    assert metrics is not None
    with metrics:
        return sum(t.packets for k, t in metrics.read().items()
                   if k.reason == reason and k.direction == int(Direction.EGRESS))


def test_every_datagram_of_a_flow_goes_to_the_proxy_and_its_answer_is_a_reply(lab: tuple[str, ...]) -> None:
    client_ip, dns_ip, netns = lab
    reg = registry.require(CLUSTER)
    with _proxy_socket(netns) as proxy:
        with in_netns(reg.pods["kube-system/client"].netns):
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with client:
            client.settimeout(3)
            client.bind((client_ip, 0))
            for n in range(2):  # the second datagram of the same 5-tuple goes to the proxy too
                client.sendto(f"query {n}".encode(), (dns_ip, 53))
                data, sender, original = _receive(proxy)
                assert (data, sender, original) == (f"query {n}".encode(), client.getsockname(), (dns_ip, 53))
                _answer_from(netns, (dns_ip, 53), sender, f"answer {n}".encode())
                # the proxy's answer, not the kube-dns server's (an echo: "kube-system/kube-dns:53 ...")
                assert client.recvfrom(2048) == (f"answer {n}".encode(), (dns_ip, 53))
    assert _metric(REASON_PROXY_REDIRECT) >= 2


def test_without_the_proxy_the_datagram_is_dropped_as_proxy_down(lab: tuple[str, str, str]) -> None:
    _, dns_ip, _ = lab
    reg = registry.require(CLUSTER)
    before = _metric(REASON_PROXY_DOWN)
    with in_netns(reg.pods["kube-system/client"].netns):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        client.settimeout(0.5)
        client.sendto(b"query", (dns_ip, 53))
        with pytest.raises(TimeoutError):
            client.recvfrom(2048)  # kube-dns never saw it: its server would have answered
    assert _metric(REASON_PROXY_DOWN) == before + 1

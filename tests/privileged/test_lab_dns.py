"""The lab's kube-dns answers for real, and `[[lab.externalHosts]]` are hosts outside the cluster.

A two-node lab: kube-dns (kube-system, k8s-app=kube-dns) answers A queries over UDP and TCP from
the lab's zone (Services' clusterIPs, pods, external hosts with their TTLs; NXDOMAIN otherwise),
and a pod reaches an external host's server by the address DNS gave, across the underlay.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_helpers import cli_lab, inline_repo, meshctl, unique_cluster
from dnslib import QTYPE, RCODE, DNSRecord

from meshctl.dataplane.netns import in_netns
from meshctl.lab import registry
from meshctl.lab.netns import list_netns

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = unique_cluster("t-lab-dns")
TOML = f"""[cluster]
name = "{CLUSTER}"
[[nodes]]
name = "node-1"
podCIDR = "10.232.1.0/24"
[[nodes]]
name = "node-2"
podCIDR = "10.232.2.0/24"
[[lab.externalHosts]]
name = "api.stripe.com"
address = "203.0.113.10"
ports = [443]
ttl = 1
[[lab.externalHosts]]
name = "s3.amazonaws.com"
address = "203.0.113.20"
ports = [443, 80]
"""
PODS = """apiVersion: v1
kind: Namespace
metadata: {name: payments}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: payment-processor, namespace: payments, labels: {app: payment-processor}}
spec:
  nodeName: node-1
  containers: [{name: app, image: payments, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  nodeName: node-2
  containers:
    - name: coredns
      image: coredns/coredns:1.11.1
      ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: payments-api, namespace: payments}
spec:
  clusterIP: 10.96.0.42
  selector: {app: payment-processor}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = inline_repo(tmp_path_factory.mktemp("labdns") / "repo", TOML, PODS)
    with cli_lab(root):
        yield root


def _ask(name: str, tcp: bool = False, qtype: str = "A") -> DNSRecord:
    reg = registry.require(CLUSTER)
    with in_netns(reg.pods["payments/payment-processor"].netns):
        server = reg.pods["kube-system/kube-dns"].ip
        raw = DNSRecord.question(name, qtype).send(server, 53, tcp=tcp, timeout=3)
    return DNSRecord.parse(raw)


def test_kube_dns_answers_the_zone_over_udp_and_tcp(lab: Path) -> None:
    stripe = _ask("api.stripe.com")
    assert stripe.header.rcode == RCODE.NOERROR
    assert [(str(rr.rdata), rr.ttl, rr.rtype) for rr in stripe.rr] == [("203.0.113.10", 1, QTYPE.A)]
    over_tcp = _ask("S3.Amazonaws.com.", tcp=True)
    assert [(str(rr.rdata), rr.ttl) for rr in over_tcp.rr] == [("203.0.113.20", 60)]
    assert [str(rr.rdata) for rr in _ask("payments-api.payments.svc.cluster.local").rr] == ["10.96.0.42"]
    pod_ip = registry.require(CLUSTER).pods["payments/payment-processor"].ip
    pod_name = f"{pod_ip.replace('.', '-')}.payments.pod.cluster.local"
    assert [str(rr.rdata) for rr in _ask(pod_name).rr] == [pod_ip]
    unknown = _ask("evil.example.net")
    assert unknown.header.rcode == RCODE.NXDOMAIN and not unknown.rr
    aaaa = _ask("api.stripe.com", qtype="AAAA")  # a known name without IPv6: an empty answer
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr


def test_a_pod_reaches_an_external_host_by_the_address_dns_gave(lab: Path) -> None:
    reg = registry.require(CLUSTER)
    address = str(_ask("s3.amazonaws.com").rr[0].rdata)
    with in_netns(reg.pods["payments/payment-processor"].netns):
        for port in (443, 80):
            with socket.create_connection((address, port), timeout=3) as conn:
                assert conn.recv(100) == f"external/s3.amazonaws.com:{port}\n".encode()
    status = meshctl(lab, "lab", "status")
    assert status.returncode == 0, status.stderr
    assert "external/api.stripe.com" in status.stdout and "203.0.113.10" in status.stdout


def test_lab_down_removes_the_external_hosts(tmp_path: Path) -> None:
    from meshctl.lab.servers import find_all

    cluster = unique_cluster("t-lab-dns-down")
    with cli_lab(inline_repo(tmp_path / "repo", TOML.replace(CLUSTER, cluster), PODS)):
        ext = registry.require(cluster).external
        assert ext is not None and [h.key for h in ext.hosts] == ["external/api.stripe.com",
                                                                   "external/s3.amazonaws.com"]
        assert all(h.server_pid in find_all(cluster) for h in ext.hosts)
    assert ext.netns not in list_netns() and not find_all(cluster)


def test_an_external_host_taken_out_of_the_config_leaves_with_its_server_and_address(tmp_path: Path) -> None:
    from meshctl.lab.servers import find_all

    cluster = unique_cluster("t-lab-dns-edit")
    root = inline_repo(tmp_path / "repo", TOML.replace(CLUSTER, cluster), PODS)
    with cli_lab(root):
        ext = registry.require(cluster).external
        assert ext is not None
        s3 = next(h for h in ext.hosts if h.key == "external/s3.amazonaws.com")
        cut = TOML.replace(CLUSTER, cluster).split('[[lab.externalHosts]]\nname = "s3.amazonaws.com"')[0]
        (root / "meshctl.toml").write_text(cut)
        again = meshctl(root, "lab", "up", timeout=120)
        assert again.returncode == 0, again.stderr
        left = registry.require(cluster).external
        assert left is not None and [h.key for h in left.hosts] == ["external/api.stripe.com"]
        assert s3.server_pid not in find_all(cluster)
        addresses = subprocess.run(["ip", "-n", ext.netns, "-4", "-o", "addr"], capture_output=True,
                                   text=True, check=True).stdout
        assert "203.0.113.10/32" in addresses and "203.0.113.20/32" not in addresses

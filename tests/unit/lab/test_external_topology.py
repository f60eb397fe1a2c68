"""The external client in the lab topology: from meshctl.toml + Services, addresses, names."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from meshctl.errors import ConfigError, LabError
from meshctl.lab import names
from meshctl.lab.cluster import plan_registry
from meshctl.lab.topology import LabNode, Topology, allocate, external_address, from_desired, validate
from meshctl.source import load_desired

CONFIG = """
[cluster]
name = "t-lbi-topo"
{extra}
[[nodes]]
name = "node-1"
podCIDR = "10.9.1.0/24"
[[nodes]]
name = "node-2"
podCIDR = "10.9.2.0/24"
"""

SERVICES = """
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: LoadBalancer
  loadBalancerIP: 192.0.2.20
  externalIPs: [192.0.2.10]
  ports: [{port: 80}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.21}]}}
---
apiVersion: v1
kind: Service
metadata: {name: internal, namespace: demo}
spec: {ports: [{port: 80}]}
"""


def _topo(tmp_path: Path, extra: str) -> Topology:
    (tmp_path / "meshctl.toml").write_text(CONFIG.format(extra=extra))
    (tmp_path / "svc.yaml").write_text(SERVICES)
    return from_desired(load_desired(tmp_path))


def test_kube_proxy_replacement_turns_the_external_client_on(tmp_path: Path) -> None:
    topo = _topo(tmp_path, "kubeProxyReplacement = true")
    assert topo.external
    assert topo.external_routes == tuple(IPv4Network(f"192.0.2.{i}/32") for i in (10, 20, 21))
    reg = plan_registry(topo, None)
    assert reg.external is not None
    assert reg.external.netns == "mc-t-lbi-topo-ext" and reg.external.via_node == "node-1"
    assert reg.external.underlay_ip == "172.31.250.254"
    assert reg.external.netns in reg.netns_names()
    assert reg.external.underlay_ip not in {n.underlay_ip for n in reg.nodes.values()}


def test_off_by_default(tmp_path: Path) -> None:
    topo = _topo(tmp_path, "")
    assert not topo.external
    assert plan_registry(topo, None).external is None


def test_names_and_validation() -> None:
    assert names.is_lab_netns("c", "mc-c-ext", set())
    assert not names.is_lab_netns("c", "mc-c-extra", set())
    base = Topology("c", IPv4Network("172.31.9.0/24"), (LabNode("n1", IPv4Network("10.1.0.0/24")),))
    with pytest.raises(ConfigError, match="'ext'"):
        validate(dataclasses.replace(base, nodes=(LabNode("ext", IPv4Network("10.1.0.0/24")),)))
    with pytest.raises(LabError, match="unknown node 'n9'"):
        validate(dataclasses.replace(base, external=True, external_via="n9"))
    assert external_address(IPv4Network("172.31.9.0/24")) == IPv4Address("172.31.9.254")
    tiny = Topology("c", IPv4Network("172.31.9.0/30"), (LabNode("n1", IPv4Network("10.1.0.0/24")),
                                                         LabNode("n2", IPv4Network("10.1.1.0/24"))),
                    external=True)
    with pytest.raises(LabError, match="external client"):
        allocate(tiny)

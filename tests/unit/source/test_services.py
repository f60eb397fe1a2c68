"""v1 Service loading: fields, Kubernetes validation, deterministic clusterIP/nodePort allocation."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from meshctl.compile.backends import resolve_backends
from meshctl.errors import ConfigError, SourceError
from meshctl.model.service import Service
from meshctl.source import load_desired
from meshctl.source.services import allocate_cluster_ip, allocate_node_port

CONFIG = """
[cluster]
name = "t-lbi-svc"
[[nodes]]
name = "node-1"
podCIDR = "10.9.1.0/24"
"""

INVENTORY = """
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: demo, labels: {app: api}}
spec:
  nodeName: node-1
  containers:
    - name: c
      ports: [{name: http, containerPort: 3000}, {name: dns, containerPort: 53, protocol: UDP}]
status: {podIP: 10.9.1.7}
---
apiVersion: v1
kind: Pod
metadata: {name: api-2, namespace: demo, labels: {app: api}}
spec:
  nodeName: node-1
  containers:
    - name: c
      ports: [{name: http, containerPort: 3001}]
status: {podIP: 10.9.1.8}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: demo, labels: {app: other}}
spec: {nodeName: node-1}
status: {podIP: 10.9.1.9}
"""

FULL = """
apiVersion: v1
kind: Service
metadata: {name: api, namespace: demo, uid: abc, resourceVersion: "7"}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  selector: {app: api}
  ports:
    - {name: http, port: 80, targetPort: http, nodePort: 30080, appProtocol: http}
    - {name: raw, port: 81, targetPort: 3000, protocol: TCP}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  externalTrafficPolicy: Local
  externalIPs: [192.0.2.10]
  loadBalancerIP: 192.0.2.20
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.21}, {hostname: lb.example.com}]
"""


def repo(tmp_path: Path, services: str, config: str = CONFIG) -> Path:
    (tmp_path / "meshctl.toml").write_text(config)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    (tmp_path / "services.yaml").write_text(services)
    return tmp_path


def load(tmp_path: Path, services: str, config: str = CONFIG) -> tuple[Service, ...]:
    return load_desired(repo(tmp_path, services, config)).services


def test_full_service(tmp_path: Path) -> None:
    (svc,) = load(tmp_path, FULL)
    assert svc.key == "demo/api" and svc.type == "LoadBalancer" and not svc.headless
    assert svc.cluster_ip == IPv4Address("10.96.0.10")
    first = svc.ports[0]
    assert (first.name, first.port, first.target, first.node_port, first.protocol) == (
        "http", 80, "http", 30080, "TCP")
    assert svc.ports[1].node_port is not None and 30000 <= svc.ports[1].node_port <= 32767
    assert svc.session_affinity == "ClientIP" and svc.session_affinity_timeout == 60
    assert svc.external_traffic_policy == "Local"
    assert svc.external_ips == (IPv4Address("192.0.2.10"),)
    assert svc.load_balancer_ips == (IPv4Address("192.0.2.20"), IPv4Address("192.0.2.21"))
    assert svc.external_addresses == tuple(IPv4Address(a) for a in ("192.0.2.10", "192.0.2.20", "192.0.2.21"))
    assert svc.source.file == "services.yaml" and svc.source.line == 2


def test_backends_resolve_named_and_numeric_target_ports(tmp_path: Path) -> None:
    desired = load_desired(repo(tmp_path, FULL))
    (svc,) = desired.services
    named = resolve_backends(svc, desired.pods, svc.ports[0])
    assert [(b.pod.name, b.port, b.protocol, b.key) for b in named] == [
        ("api-1", 3000, "TCP", "10.9.1.7:3000/TCP"), ("api-2", 3001, "TCP", "10.9.1.8:3001/TCP")]
    numeric = resolve_backends(svc, desired.pods, svc.ports[1])
    assert [(b.pod.name, b.port) for b in numeric] == [("api-1", 3000), ("api-2", 3000)]


def test_backends_need_selector_namespace_and_named_port(tmp_path: Path) -> None:
    desired = load_desired(repo(tmp_path, """
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: demo}
spec:
  selector: {app: api}
  ports: [{port: 53, targetPort: dns, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: demo}
spec:
  ports: [{port: 80}]
"""))
    dns, manual = desired.services
    # Only api-1 has a UDP port named dns.
    assert [b.pod.name for b in resolve_backends(dns, desired.pods)] == ["api-1"]
    assert resolve_backends(manual, desired.pods) == ()
    assert dns.ports[0].target_port == "dns"


def test_defaults_and_allocation_are_deterministic(tmp_path: Path) -> None:
    text = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: NodePort
  selector: {app: api}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
  selector: {app: api}
"""
    web, db = load(tmp_path, text)
    assert web.type == "NodePort" and web.cluster_ip in IPv4Network("10.96.0.0/16")
    assert web.cluster_ip not in (IPv4Address("10.96.0.0"), IPv4Address("10.96.0.1"))
    assert web.ports[0].target == 80 and web.ports[0].protocol == "TCP"
    assert web.session_affinity == "None" and web.external_traffic_policy == "Cluster"
    assert db.headless and db.cluster_ip is None and db.ports == ()
    again = load(tmp_path, text)
    assert again[0] == web
    # A new service does not move an existing one (no collision here).
    extra = "---\napiVersion: v1\nkind: Service\nmetadata: {name: aaa, namespace: demo}\n"
    more = load(tmp_path, text + extra + "spec: {ports: [{port: 1}]}\n")
    assert more[0].cluster_ip == web.cluster_ip and more[0].ports == web.ports


def test_service_cidr_from_config(tmp_path: Path) -> None:
    cfg = CONFIG.replace('name = "t-lbi-svc"', 'name = "t-lbi-svc"\nserviceCIDR = "10.200.0.0/24"')
    (svc,) = load(tmp_path, "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: demo}\n"
                            "spec: {ports: [{port: 1}]}\n", cfg)
    assert svc.cluster_ip in IPv4Network("10.200.0.0/24")


def test_allocators_probe_on_collision() -> None:
    cidr = IPv4Network("10.96.0.0/29")  # usable for allocation: .2 .. .6
    taken: set[IPv4Address] = set()
    for i in range(5):
        ip = allocate_cluster_ip(f"ns/s{i}", cidr, taken)
        assert ip is not None and ip not in taken
        taken.add(ip)
    assert taken == {IPv4Address(f"10.96.0.{i}") for i in range(2, 7)}
    assert allocate_cluster_ip("ns/full", cidr, taken) is None
    ports = {allocate_node_port("k", set())}
    assert allocate_node_port("k", set(ports)) not in ports


BAD = [
    ("spec: {type: ExternalName, externalName: x.example.com}", 5, "spec.type", "ExternalName"),
    ("spec: {ports: [{port: 80}], externalName: x}", 5, "spec.externalName", "not supported"),
    ("spec: {ports: [{port: 80}], loadBalancerSourceRanges: [10.0.0.0/8]}", 5,
     "spec.loadBalancerSourceRanges", "CiliumNetworkPolicy"),
    ("spec:\n  ports:\n    - {port: 80}\n    - {port: 81}", 5, "spec", "name is required"),
    ("spec:\n  ports:\n    - {port: 80, nodePort: 30001}", 5, "spec", "NodePort or LoadBalancer"),
    ("spec:\n  type: NodePort\n  ports:\n    - {port: 80, nodePort: 80}", 8, "spec.ports[0].nodePort",
     "30000-32767"),
    ("spec:\n  ports:\n    - {port: 80, protocol: ICMP}", 7, "spec.ports[0].protocol", "ICMP"),
    ("spec:\n  ports:\n    - {port: 80, targetPort: '8080'}", 7, "spec.ports[0].targetPort", "quoted"),
    ("spec:\n  ports:\n    - {port: 80}\n  clusterIP: 10.96.0.1.5", 8, "spec.clusterIP", "not an IP"),
    ("spec:\n  ports: []\n  clusterIP: fd00::1", 7, "spec.clusterIP", "IPv6"),
    ("spec:\n  ports: [{port: 1}]\n  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n"
     "    clientIP: {timeoutSeconds: 90000}", 9, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
     "1..86400"),
    ("spec:\n  ports: [{port: 1}]\n  externalTrafficPolicy: Local", 5, "spec", "externalTrafficPolicy"),
    ("spec:\n  ports: [{port: 1}]\n  clusterIP: None\n  type: NodePort", 5, "spec", "headless"),
    ("spec:\n  ports: [{port: 1}]\n  selectr: {app: x}", 7, "spec.selectr", "did you mean 'selector'"),
    ("spec:\n  ports: [{port: 1}]\n  internalTrafficPolicy: Local", 7, "spec.internalTrafficPolicy", "Local"),
]


@pytest.mark.parametrize(("spec", "line", "path", "message"), BAD)
def test_bad_services(tmp_path: Path, spec: str, line: int, path: str, message: str) -> None:
    text = "# svc\napiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: demo}\n" + spec + "\n"
    with pytest.raises(SourceError) as info:
        load(tmp_path, text)
    err = info.value
    assert (err.file, err.path) == ("services.yaml", path), str(err)
    assert err.line == line, str(err)
    assert message in err.message


def test_cross_service_conflicts(tmp_path: Path) -> None:
    two = """
apiVersion: v1
kind: Service
metadata: {name: a, namespace: demo}
spec: {clusterIP: 10.96.0.10, type: NodePort, ports: [{port: 1, nodePort: 30001}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 1}]
"""
    with pytest.raises(SourceError, match=r"services.yaml:11: spec.clusterIP: 10.96.0.10 is also the"):
        load(tmp_path, two)
    with pytest.raises(SourceError, match=r"nodePort 30001 is also used by demo/a"):
        load(tmp_path, two.replace("clusterIP: 10.96.0.10\n  ports: [{port: 1}]",
                                   "type: NodePort\n  ports: [{port: 1, nodePort: 30001}]"))
    with pytest.raises(SourceError, match=r"outside the service CIDR 10.96.0.0/16"):
        load(tmp_path, two.replace("10.96.0.10\n  ports", "10.97.0.10\n  ports"))
    with pytest.raises(SourceError, match="duplicate Service demo/a"):
        load(tmp_path, two.replace("name: b", "name: a"))
    with pytest.raises(SourceError, match="namespace 'nope' is not declared"):
        load(tmp_path, two.replace("namespace: demo}\nspec:\n", "namespace: nope}\nspec:\n"))


def test_service_cidr_overlapping_pods_is_a_config_error(tmp_path: Path) -> None:
    cfg = CONFIG.replace('name = "t-lbi-svc"', 'name = "t-lbi-svc"\nserviceCIDR = "10.9.0.0/16"')
    with pytest.raises(ConfigError, match=r"meshctl.toml:4: cluster.serviceCIDR: 10.9.0.0/16 overlaps"):
        load(tmp_path, "", cfg)

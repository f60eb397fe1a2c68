"""The lab topology: which nodes and pods to build, validated before anything touches the kernel.

Built from the desired state (meshctl.toml nodes + Pod manifests) so bad input fails with a
message naming the file and line, and nothing is created. Address allocation is pure too: it
takes the addresses of the previous run (from the registry) and keeps them stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from meshctl.errors import ConfigError, LabError, SourceError
from meshctl.lab import names

CONFIG_FILE = "meshctl.toml"


@dataclass(frozen=True)
class LabNode:
    name: str
    pod_cidr: IPv4Network
    address: IPv4Address | None = None  # `address` under [[nodes]]: the node's underlay address

    @property
    def gateway(self) -> IPv4Address:
        """The address pods use as default gateway; the node answers for it."""
        return self.pod_cidr.network_address + 1


@dataclass(frozen=True)
class LabPod:
    key: str  # "namespace/name"
    node: str
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    pod_ip: IPv4Address | None = None  # status.podIP when the manifest gives one
    file: str = ""
    line: int | None = None
    dns: bool = False  # a kube-dns pod (kube-system, k8s-app=kube-dns): answers DNS from the lab's zone


@dataclass(frozen=True)
class Topology:
    cluster: str
    underlay_cidr: IPv4Network
    nodes: tuple[LabNode, ...]
    pods: tuple[LabPod, ...] = ()
    root: Path | None = None  # the desired repo, to point errors at meshctl.toml lines
    # The external client (kubeProxyReplacement): addresses it routes via `external_via`
    # (default: the first node), i.e. the services' LoadBalancer IPs and externalIPs.
    external: bool = False
    external_routes: tuple[IPv4Network, ...] = ()
    external_via: str | None = None
    # [[lab.externalHosts]] (on the external netns) and the Services' clusterIPs: the lab's DNS zone
    external_hosts: tuple[Any, ...] = ()
    services: tuple[tuple[str, IPv4Address], ...] = ()
    agents: Any = None  # [agents] of meshctl.toml (AgentsSettings): a port puts the agents on TCP

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


@dataclass(frozen=True)
class Addresses:
    """Allocated addresses: pod "ns/name" -> IP, node -> underlay IP."""

    pods: dict[str, IPv4Address] = field(default_factory=dict)
    underlay: dict[str, IPv4Address] = field(default_factory=dict)


def from_desired(desired: Any) -> Topology:
    """Topology of a loaded desired state (meshctl.source.load_desired)."""
    cfg = desired.config
    pods = []
    for p in desired.pods:
        tcp = sorted({cp.container_port for cp in p.ports if cp.protocol == "TCP"})
        udp = sorted({cp.container_port for cp in p.ports if cp.protocol == "UDP"})
        src = getattr(p, "source", None)
        pods.append(LabPod(
            key=f"{p.namespace}/{p.name}", node=p.node_name or "", tcp_ports=tuple(tcp),
            udp_ports=tuple(udp), pod_ip=p.pod_ip,
            file=str(getattr(src, "file", "") or ""), line=getattr(src, "line", None),
            dns=p.namespace == "kube-system" and p.labels.get("k8s-app") == "kube-dns",
        ))
    lb = getattr(cfg, "load_balancer", None)
    routes = {IPv4Network(f"{ip}/32") for svc in getattr(desired, "services", ())
              for ip in svc.external_addresses}
    topo = Topology(
        cluster=cfg.cluster, underlay_cidr=cfg.lab.underlay_cidr,
        nodes=tuple(LabNode(n.name, n.pod_cidr, n.address) for n in cfg.nodes), pods=tuple(pods),
        root=getattr(desired, "root", None),
        external=bool(lb and lb.kube_proxy_replacement) or bool(cfg.lab.external_hosts),
        external_routes=tuple(sorted(routes)), external_hosts=cfg.lab.external_hosts,
        services=tuple((svc.key, svc.cluster_ip) for svc in getattr(desired, "services", ())
                       if svc.cluster_ip is not None),
        agents=getattr(cfg, "agents", None),
    )
    validate(topo)
    return topo


def _config_error(topo: Topology, path: str, needle: str, message: str) -> ConfigError:
    line = None
    if topo.root is not None:
        try:
            for i, text in enumerate((topo.root / CONFIG_FILE).read_text().splitlines(), 1):
                if needle in text:
                    line = i
                    break
        except OSError:
            pass
    return ConfigError(CONFIG_FILE, line, path, message)


def validate(topo: Topology) -> None:
    """Raise one clear error for the first problem; the kernel is untouched until this passes."""
    if not names.valid_cluster(topo.cluster):
        raise _config_error(topo, "cluster.name", topo.cluster,
                            f"cluster name {topo.cluster!r} must be lowercase letters, digits and '-'"
                            " (at most 32), it names network namespaces")
    if not topo.nodes:
        raise _config_error(topo, "nodes", "[[nodes]]", "the lab needs at least one [[nodes]] entry")
    seen: dict[str, int] = {}
    for i, node in enumerate(topo.nodes):
        if node.name in seen:
            raise _config_error(topo, f"nodes[{i}].name", node.name, f"duplicate node {node.name!r}")
        seen[node.name] = i
        if not names.valid_cluster(node.name) or node.name in ("u", "ext") or node.name.startswith("p-"):
            raise _config_error(topo, f"nodes[{i}].name", node.name,
                                f"node name {node.name!r} must be lowercase letters, digits and '-'"
                                " (not 'u', 'ext' or 'p-...', the lab uses those)")
        if node.pod_cidr.prefixlen > 30:
            raise _config_error(topo, f"nodes[{i}].podCIDR", str(node.pod_cidr),
                                f"pod CIDR {node.pod_cidr} is too small for the lab (at most /30)")
        if node.pod_cidr.overlaps(topo.underlay_cidr):
            raise _config_error(topo, f"nodes[{i}].podCIDR", str(node.pod_cidr),
                                f"pod CIDR {node.pod_cidr} of node {node.name!r} overlaps the lab "
                                f"underlay {topo.underlay_cidr} (lab.underlayCIDR)")
        if node.address is not None and node.address not in usable_underlay(topo.underlay_cidr):
            raise _config_error(topo, f"nodes[{i}].address", str(node.address),
                                f"address {node.address} of node {node.name!r} is not a node address of "
                                f"the lab underlay {topo.underlay_cidr} (its last two are the lab's own)")
        for other in topo.nodes[:i]:
            if node.address is not None and node.address == other.address:
                raise _config_error(topo, f"nodes[{i}].address", str(node.address),
                                    f"address {node.address} of node {node.name!r} is also the address "
                                    f"of node {other.name!r}")
            if node.pod_cidr.overlaps(other.pod_cidr):
                raise _config_error(topo, f"nodes[{i}].podCIDR", str(node.pod_cidr),
                                    f"pod CIDR {node.pod_cidr} of node {node.name!r} overlaps "
                                    f"{other.pod_cidr} of node {other.name!r}")
    if topo.external_via is not None and topo.external_via not in seen:
        raise LabError(f"external client routes via unknown node {topo.external_via!r}")
    if topo.underlay_cidr.num_addresses - 2 < len(topo.nodes):
        raise _config_error(topo, "lab.underlayCIDR", str(topo.underlay_cidr),
                            f"underlay {topo.underlay_cidr} has room for fewer than {len(topo.nodes)} nodes")
    pods: dict[str, LabPod] = {}
    ips: dict[IPv4Address, str] = {}
    for pod in topo.pods:
        if pod.key in pods:
            first = pods[pod.key]
            raise SourceError(pod.file, pod.line, "metadata.name",
                              f"duplicate pod {pod.key} (first defined at {first.file}:{first.line})")
        pods[pod.key] = pod
        if not pod.node:
            raise SourceError(pod.file, pod.line, "spec.nodeName",
                              f"pod {pod.key} has no spec.nodeName; the lab places pods on named nodes")
        if pod.node not in seen:
            known = ", ".join(sorted(seen))
            raise SourceError(pod.file, pod.line, "spec.nodeName",
                              f"pod {pod.key} is on unknown node {pod.node!r} "
                              f"(nodes in meshctl.toml: {known})")
        if pod.pod_ip is not None:
            node = topo.node(pod.node)
            if pod.pod_ip not in node.pod_cidr or pod.pod_ip in (
                    node.pod_cidr.network_address, node.pod_cidr.broadcast_address, node.gateway):
                raise SourceError(pod.file, pod.line, "status.podIP",
                                  f"pod IP {pod.pod_ip} of {pod.key} is not a usable address of node "
                                  f"{pod.node!r}'s pod CIDR {node.pod_cidr} (the first is the gateway)")
            if pod.pod_ip in ips:
                raise SourceError(pod.file, pod.line, "status.podIP",
                                  f"pod IP {pod.pod_ip} of {pod.key} is already used by {ips[pod.pod_ip]}")
            ips[pod.pod_ip] = pod.key


def allocate(topo: Topology, previous: Addresses | None = None) -> Addresses:
    """Addresses for every pod and node: given ones first, then the previous run's, then new."""
    prev = previous or Addresses()
    pods: dict[str, IPv4Address] = {}
    used: set[IPv4Address] = {p.pod_ip for p in topo.pods if p.pod_ip is not None}
    for pod in topo.pods:
        if pod.pod_ip is not None:
            pods[pod.key] = pod.pod_ip
    for pod in topo.pods:
        if pod.key in pods:
            continue
        node = topo.node(pod.node)
        old = prev.pods.get(pod.key)
        if old is not None and old in node.pod_cidr and old not in used and old > node.gateway \
                and old != node.pod_cidr.broadcast_address:
            pods[pod.key] = old
            used.add(old)
    for pod in topo.pods:
        if pod.key in pods:
            continue
        node = topo.node(pod.node)
        ip = _first_free(node.pod_cidr, used, skip=(node.gateway,))
        if ip is None:
            raise LabError(f"node {node.name!r}: pod CIDR {node.pod_cidr} is full, no address for {pod.key}")
        pods[pod.key] = ip
        used.add(ip)
    underlay: dict[str, IPv4Address] = {n.name: n.address for n in topo.nodes if n.address is not None}
    uused: set[IPv4Address] = set(underlay.values())
    for node in topo.nodes:
        if node.name in underlay:
            continue
        old = prev.underlay.get(node.name)
        if old is not None and old in topo.underlay_cidr and old not in uused and old not in (
                topo.underlay_cidr.network_address, topo.underlay_cidr.broadcast_address):
            underlay[node.name] = old
            uused.add(old)
    host = host_address(topo.underlay_cidr) if topo.agents is not None and topo.agents.port else None
    for node in topo.nodes:
        if node.name not in underlay:
            ip = _first_free(topo.underlay_cidr, uused, skip=(host,) if host else ())
            if ip is None:
                raise LabError(f"underlay {topo.underlay_cidr} is full")
            underlay[node.name] = ip
            uused.add(ip)
    if topo.external:
        ip = external_address(topo.underlay_cidr)
        if ip in uused:
            raise LabError(f"underlay {topo.underlay_cidr} is full: no address for the external client")
    if host is not None and host in uused:
        raise LabError(f"underlay {topo.underlay_cidr} is full: no address for this host's link")
    return Addresses(pods=pods, underlay=underlay)


def external_address(underlay: IPv4Network) -> IPv4Address:
    """The external client's underlay address: the last usable one, so node addresses never move."""
    return underlay.broadcast_address - 1


def host_address(underlay: IPv4Network) -> IPv4Address:
    """This host's address on the underlay (agents over TCP): the one before the external client's."""
    return underlay.broadcast_address - 2


def usable_underlay(underlay: IPv4Network) -> list[IPv4Address]:
    """Addresses nodes may have: all hosts but the external client's and this host's."""
    return [ip for ip in underlay.hosts() if ip not in (external_address(underlay), host_address(underlay))]


def _first_free(cidr: IPv4Network, used: Iterable[IPv4Address],
                skip: Iterable[IPv4Address] = ()) -> IPv4Address | None:
    taken = set(used) | set(skip)
    for ip in cidr.hosts():
        if ip not in taken:
            return ip
    return None


def pods_by_node(topo: Topology) -> Mapping[str, list[LabPod]]:
    out: dict[str, list[LabPod]] = {n.name: [] for n in topo.nodes}
    for pod in topo.pods:
        out[pod.node].append(pod)
    return out

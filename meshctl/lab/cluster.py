"""`lab up`, `lab down` and `lab status`: the lab's lifecycle over the registry.

Up records what it is about to build in the registry first, then builds it idempotently, so
running it twice is harmless and `down` can clean up whatever a crash left behind.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from meshctl.dataplane.dnsproxy import DnsFiles
from meshctl.dataplane.envoy import ProxyFiles, proxy_root
from meshctl.dataplane.wireguard.teardown import remove_cluster as remove_wireguard
from meshctl.dataplane.writer import lock_path
from meshctl.errors import LabError
from meshctl.lab import agents, datapath, dnszone, inventory, names, network, registry, servers
from meshctl.lab.netns import exists, list_netns
from meshctl.lab.registry import ExternalRecord, NodeRecord, PodRecord, Registry
from meshctl.lab.topology import Addresses, Topology, allocate, external_address
from meshctl.proxy.supervisor import stop_dns_proxy, stop_envoy

log = logging.getLogger(__name__)


def plan_registry(topo: Topology, prev: Registry | None) -> Registry:
    """The registry `up` will build: stable addresses, server pids carried over."""
    prev_addr = Addresses(
        pods={k: p.address for k, p in prev.pods.items()} if prev else {},
        underlay={k: IPv4Address(n.underlay_ip)
                  for k, n in prev.nodes.items()} if prev else {},
    )
    addr = allocate(topo, prev_addr)
    reg = Registry(cluster=topo.cluster, underlay_netns=names.underlay_netns(topo.cluster),
                   underlay_cidr=str(topo.underlay_cidr), datapath=prev.datapath if prev else False)
    for n in topo.nodes:
        reg.nodes[n.name] = NodeRecord(
            name=n.name, netns=names.node_netns(topo.cluster, n.name), pod_cidr=str(n.pod_cidr),
            underlay_ip=str(addr.underlay[n.name]), underlay_port=names.underlay_port(n.name))
    for p in topo.pods:
        old = prev.pods.get(p.key) if prev else None
        reg.pods[p.key] = PodRecord(
            key=p.key, node=p.node, netns=names.pod_netns(topo.cluster, p.key), ip=str(addr.pods[p.key]),
            veth=names.pod_veth(p.key), tcp_ports=list(p.tcp_ports), udp_ports=list(p.udp_ports),
            server_pid=old.server_pid if old else None, dns=p.dns)
    if topo.external and topo.nodes:
        reg.external = ExternalRecord(
            netns=names.external_netns(topo.cluster), underlay_ip=str(external_address(topo.underlay_cidr)),
            underlay_port=names.EXTERNAL_PORT, via_node=topo.external_via or topo.nodes[0].name,
            routes=[str(r) for r in topo.external_routes])
        old_hosts = {h.key: h for h in prev.external.hosts} if prev and prev.external else {}
        for host in topo.external_hosts:
            key = f"external/{host.name}"
            reg.external.hosts.append(PodRecord(
                key=key, node="", netns=reg.external.netns, ip=str(host.address), veth="",
                tcp_ports=sorted(set(host.ports)), bind=str(host.address),
                server_pid=old_hosts[key].server_pid if key in old_hosts else None))
    return reg


@dataclass
class UpResult:
    registry: Registry
    created_pods: list[str]
    datapath: bool
    # nodes whose datapath this `up` loaded (none was attached before): no policy is in force
    # there yet, so the CNI step (meshctl.lab.cni) may program their pods open
    fresh_nodes: list[str] = field(default_factory=list)


def up(topo: Topology, with_datapath: bool = True) -> UpResult:
    """Build (or complete, or update) the lab of `topo`."""
    with registry.locked(topo.cluster):
        return _up(topo, with_datapath)


def _up(topo: Topology, with_datapath: bool) -> UpResult:
    prev = registry.load(topo.cluster)
    reg = plan_registry(topo, prev)
    # Stale things of the previous run: pods gone or moved, nodes gone.
    stale_pods = {k: p for k, p in (prev.pods if prev else {}).items()
                  if k not in reg.pods or reg.pods[k].node != p.node or reg.pods[k].ip != p.ip}
    stale_nodes = {k: n for k, n in (prev.nodes if prev else {}).items()
                   if k not in reg.nodes or reg.nodes[k].pod_cidr != n.pod_cidr}
    # A pod's netns name depends only on its key, so the union still names every old netns.
    # Record the union first: a crash from here on leaves nothing unknown to `down`.
    union = Registry(cluster=reg.cluster, underlay_netns=reg.underlay_netns, underlay_cidr=reg.underlay_cidr,
                     nodes={**(prev.nodes if prev else {}), **reg.nodes},
                     pods={**(prev.pods if prev else {}), **reg.pods}, datapath=reg.datapath,
                     external=reg.external or (prev.external if prev else None))
    registry.save(union)

    for key, pod in stale_pods.items():
        servers.stop(topo.cluster, pod.server_pid, key)
        node = (prev.nodes if prev else {}).get(pod.node)
        if node is not None and prev is not None and prev.datapath and exists(node.netns):
            try:
                datapath.detach(topo.cluster, node.name, node.netns, pod.veth)
            except Exception as err:
                log.debug("detach %s: %s", pod.veth, err)
        network.remove_pod(node.netns if node else "", pod)
    for name, node in stale_nodes.items():
        datapath.remove_node(topo.cluster, name, node.netns)
        network.delete_netns(node.netns)
        if exists(reg.underlay_netns):
            network.ip(reg.underlay_netns, "link", "del", node.underlay_port, check=False)

    kept = {(h.key, h.ip) for h in reg.external.hosts} if reg.external else set()
    for host in prev.external.hosts if prev and prev.external else ():
        if (host.key, host.ip) not in kept:  # no longer declared, or at another address
            servers.stop(topo.cluster, host.server_pid, host.key)
            if exists(host.netns):
                network.ip(host.netns, "addr", "del", f"{host.ip}/32", "dev", names.POD_IFNAME, check=False)

    network.ensure_underlay(topo.cluster)
    nodes = list(reg.nodes.values())
    outside = {h.ip: reg.external.underlay_ip for h in reg.external.hosts} if reg.external else {}
    for node in nodes:
        network.ensure_node(topo.cluster, node, IPv4Network(reg.underlay_cidr), nodes, outside)
    if reg.external is not None:
        network.ensure_external(topo.cluster, reg.external, IPv4Network(reg.underlay_cidr),
                                reg.nodes[reg.external.via_node], nodes)
    elif prev is not None and prev.external is not None:
        network.remove_external(topo.cluster, prev.external)
    created = []
    for key, pod in reg.pods.items():
        if network.ensure_pod(reg.nodes[pod.node], pod):
            created.append(key)
    registry.save(reg)

    dnszone.write(topo.cluster, dnszone.records(reg, topo.services, topo.external_hosts))
    hosts = reg.external.hosts if reg.external else []
    for pod in [*reg.pods.values(), *hosts]:
        if not servers.matches(pod.server_pid, topo.cluster, pod) or pod.key in created:
            servers.stop(topo.cluster, pod.server_pid, pod.key)
            pod.server_pid = None
            if pod.tcp_ports or pod.udp_ports:
                pod.server_pid = servers.start(topo.cluster, pod)
            registry.save(reg)

    reg.datapath = bool(with_datapath and datapath.available())
    if with_datapath and not reg.datapath:
        log.warning("datapath binding (meshctl/dataplane/node.py) not available: lab built without BPF")
    fresh = []
    if reg.datapath:
        registry.save(reg)
        fresh = [n.name for n in nodes if not (names.pin_dir(topo.cluster) / n.name).is_dir()]
        for node in nodes:
            veths = {p.veth: p.address for p in reg.pods.values() if p.node == node.name}
            datapath.attach_node(topo.cluster, node.name, node.netns, veths)
    registry.save(reg)
    return UpResult(registry=reg, created_pods=created, datapath=reg.datapath, fresh_nodes=fresh)


@dataclass
class DownResult:
    netns: list[str]
    pids: list[int]
    pins: bool


def down(cluster: str, nodes: tuple[str, ...] = ()) -> DownResult:
    """Remove everything of lab `cluster` (also a half-built one) and nothing else.

    `nodes` names extra node names to look for (from meshctl.toml) when the registry is lost.
    """
    if not names.valid_cluster(cluster):
        raise LabError(f"invalid cluster name {cluster!r}")
    with registry.locked(cluster):
        res = _down(cluster, nodes)
    (registry.run_dir() / f".{cluster}.lock").unlink(missing_ok=True)
    return res


def _down(cluster: str, nodes: tuple[str, ...]) -> DownResult:
    reg = registry.load(cluster)
    known_nodes = set(nodes) | (set(reg.nodes) if reg else set())
    killed = []
    if reg is not None:
        for pod in reg.pods.values():
            if pod.server_pid is not None and servers.is_lab_server(pod.server_pid, cluster):
                servers.stop(cluster, pod.server_pid)
                killed.append(pod.server_pid)
    for pid in servers.find_all(cluster):
        servers.stop(cluster, pid)
        killed.append(pid)
    for node in known_nodes:  # an Envoy its agent did not stop (adopted, or the agent was killed)
        if (pid := stop_envoy(ProxyFiles.of(cluster, node))) is not None:
            killed.append(pid)
        if (pid := stop_dns_proxy(DnsFiles.of(cluster, node))) is not None:
            killed.append(pid)
    shutil.rmtree(proxy_root() / cluster, ignore_errors=True)
    pins = names.pin_dir(cluster).exists()
    if reg is not None:
        for node in reg.nodes.values():
            if reg.datapath and exists(node.netns):
                datapath.remove_node(cluster, node.name, node.netns)
    datapath.remove_cluster(cluster)
    remove_wireguard(cluster, known_nodes)  # wireguard-go outlives a deleted netns: stop it first
    gone = []
    wanted = set(reg.netns_names()) if reg else set()
    for ns in list_netns():
        if ns in wanted or names.is_lab_netns(cluster, ns, known_nodes):
            network.delete_netns(ns)
            gone.append(ns)
    network.remove_host_link(cluster)
    shutil.rmtree(registry.log_dir(cluster), ignore_errors=True)
    shutil.rmtree(agents.pki_dir(cluster), ignore_errors=True)  # the nodes' keys
    registry.delete(cluster)
    inventory.delete(cluster)
    for lock in lock_path(cluster, "x").parent.glob(f"{cluster}.*.lock"):  # the nodes' writer locks
        lock.unlink(missing_ok=True)
    return DownResult(netns=gone, pids=sorted(set(killed)), pins=pins)


@dataclass
class PodStatus:
    record: PodRecord
    netns_ok: bool
    server_ok: bool


@dataclass
class NodeStatus:
    record: NodeRecord
    netns_ok: bool
    pods: list[PodStatus]


def status(cluster: str) -> tuple[Registry, list[NodeStatus]]:
    reg = registry.require(cluster)
    out = []
    for node in reg.nodes.values():
        pods = [PodStatus(p, exists(p.netns), servers.matches(p.server_pid, cluster, p)
                          if (p.tcp_ports or p.udp_ports) else True)
                for p in reg.pods.values() if p.node == node.name]
        out.append(NodeStatus(node, exists(node.netns), pods))
    return reg, out

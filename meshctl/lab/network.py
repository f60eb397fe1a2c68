"""The lab's wiring: netns, veths, the underlay bridge, addresses, routes and sysctls.

Every function is idempotent (create what is missing, `replace` what may exist), so `lab up`
can run again over a complete or half-built lab. Routes the lab owns carry protocol number
LAB_RTPROTO so stale ones can be found and removed without touching anything else.
"""

from __future__ import annotations

import contextlib
import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from meshctl.lab import names
from meshctl.lab.netns import exists, ip, ip_batch, sysctl
from meshctl.lab.registry import ExternalRecord, NodeRecord, PodRecord

LAB_RTPROTO = "77"  # marks routes made by the lab

# IPv6 off: the datapath drops IPv6 by default, and router solicitations would be noise drops.
_COMMON_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}


def ensure_netns(name: str) -> None:
    if not exists(name):
        ip(None, "netns", "add", name)
    sysctl(name, _COMMON_SYSCTLS)
    ip(name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    if exists(name):
        ip(None, "netns", "delete", name, check=False)


def links(netns: str | None) -> dict[str, dict[str, object]]:
    """ifname -> `ip -j link` record inside netns (None: this host's)."""
    out = ip(netns, "-j", "link", "show").stdout
    return {rec["ifname"]: rec for rec in json.loads(out or "[]")}


def ensure_underlay(cluster: str) -> None:
    ns = names.underlay_netns(cluster)
    ensure_netns(ns)
    if names.BRIDGE not in links(ns):
        ip(ns, "link", "add", names.BRIDGE, "type", "bridge")
    ip(ns, "link", "set", names.BRIDGE, "up")


def ensure_host_link(cluster: str, underlay_cidr: IPv4Network, address: IPv4Address) -> None:
    """A veth from this host to the underlay bridge with `address`: the host reaches the nodes'
    underlay addresses (the agents' API over TCP) the way a CI runner reaches a cluster's nodes."""
    uns, host = names.underlay_netns(cluster), names.host_link(cluster)
    if host not in links(None) or names.HOST_PORT not in links(uns):
        ip(None, "link", "del", host, check=False)
        ip(None, "link", "add", host, "type", "veth", "peer", "name", names.HOST_PORT, "netns", uns)
    ip(uns, "link", "set", names.HOST_PORT, "master", names.BRIDGE, "up")
    with contextlib.suppress(OSError):  # no router solicitations onto the underlay
        Path(f"/proc/sys/net/ipv6/conf/{host}/disable_ipv6").write_text("1")
    ip_batch(None, [f"addr replace {address}/{underlay_cidr.prefixlen} dev {host}", f"link set {host} up"])


def remove_host_link(cluster: str) -> None:
    ip(None, "link", "del", names.host_link(cluster), check=False)


def ensure_node(cluster: str, node: NodeRecord, underlay_cidr: IPv4Network,
                peers: list[NodeRecord], outside: dict[str, str] | None = None) -> None:
    """Node netns with its uplink on the underlay bridge, forwarding on, routes to peer CIDRs and
    to the `outside` addresses (external hosts: destination -> the external netns' address)."""
    uns = names.underlay_netns(cluster)
    ensure_netns(node.netns)
    sysctl(node.netns, {"net.ipv4.ip_forward": "1"})
    have = links(node.netns)
    if names.NODE_UPLINK not in have or node.underlay_port not in links(uns):
        ip(node.netns, "link", "del", names.NODE_UPLINK, check=False)
        ip(uns, "link", "del", node.underlay_port, check=False)
        ip(node.netns, "link", "add", names.NODE_UPLINK, "type", "veth",
           "peer", "name", node.underlay_port, "netns", uns)
        ip(node.netns, "neigh", "flush", "all", check=False)
    ip(uns, "link", "set", node.underlay_port, "master", names.BRIDGE, "up")
    cmds = [
        f"addr replace {node.underlay_ip}/{underlay_cidr.prefixlen} dev {names.NODE_UPLINK}",
        f"link set {names.NODE_UPLINK} up",
    ]
    # The gateway address every pod of this node routes through. ARP for it is answered on
    # every pod veth because it is a local address of the node (arp_ignore=0). It sits on the
    # uplink: this kernel has no dummy devices, and the uplink always exists.
    cmds.append(f"addr replace {node.gateway}/32 dev {names.NODE_UPLINK}")
    want = {}
    for peer in peers:
        if peer.name != node.name:
            want[str(IPv4Network(peer.pod_cidr))] = peer.underlay_ip
    want.update(outside or {})
    for dst, via in want.items():
        cmds.append(f"route replace {dst} via {via} dev {names.NODE_UPLINK} proto {LAB_RTPROTO}")
    ip_batch(node.netns, cmds)
    _drop_stale_routes(node.netns, keep=set(want), keep_dev_routes=True)


def _drop_stale_routes(netns: str, keep: set[str], keep_dev_routes: bool) -> None:
    """Delete lab routes to pod CIDRs that are no longer in the topology."""
    routes = json.loads(ip(netns, "-j", "route", "show", "proto", LAB_RTPROTO).stdout or "[]")
    stale = []
    for r in routes:
        dst = r.get("dst", "")
        if "gateway" in r and dst not in keep:
            stale.append(f"route del {dst} proto {LAB_RTPROTO}")
        elif "gateway" not in r and not keep_dev_routes:
            stale.append(f"route del {dst} dev {r.get('dev')}")
    ip_batch(netns, stale, force=True)


def ensure_external(cluster: str, ext: ExternalRecord, underlay_cidr: IPv4Network, via: NodeRecord,
                    nodes: list[NodeRecord]) -> None:
    """The external client: eth0 on the underlay bridge, service addresses routed via node `via`.

    It is outside the cluster: it reaches nodes' underlay addresses (NodePorts) directly and
    LoadBalancer/external IPs through `via`, like a router in front of a cluster would send them.
    """
    uns = names.underlay_netns(cluster)
    ensure_netns(ext.netns)
    if names.POD_IFNAME not in links(ext.netns) or ext.underlay_port not in links(uns):
        ip(ext.netns, "link", "del", names.POD_IFNAME, check=False)
        ip(uns, "link", "del", ext.underlay_port, check=False)
        ip(ext.netns, "link", "add", names.POD_IFNAME, "type", "veth",
           "peer", "name", ext.underlay_port, "netns", uns)
    ip(uns, "link", "set", ext.underlay_port, "master", names.BRIDGE, "up")
    cmds = [
        f"addr replace {ext.underlay_ip}/{underlay_cidr.prefixlen} dev {names.POD_IFNAME}",
        f"link set {names.POD_IFNAME} up",
    ]
    cmds += [f"route replace {dst} via {via.underlay_ip} dev {names.POD_IFNAME} proto {LAB_RTPROTO}"
             for dst in ext.routes]
    # External hosts: their addresses here, and the way back to the pods that reach them (the lab
    # does not masquerade: a pod's packets reach the outside with the pod's address)
    cmds += [f"addr replace {h.ip}/32 dev {names.POD_IFNAME}" for h in ext.hosts]
    pod_routes = {n.pod_cidr: n.underlay_ip for n in nodes} if ext.hosts else {}
    cmds += [f"route replace {dst} via {gw} dev {names.POD_IFNAME} proto {LAB_RTPROTO}"
             for dst, gw in pod_routes.items()]
    ip_batch(ext.netns, cmds)
    # `ip -j route` shows a /32 destination as a bare address.
    keep = {str(n.network_address) if n.prefixlen == 32 else str(n)
            for n in map(IPv4Network, [*ext.routes, *pod_routes])}
    _drop_stale_routes(ext.netns, keep=keep, keep_dev_routes=True)


def remove_external(cluster: str, ext: ExternalRecord) -> None:
    delete_netns(ext.netns)
    if exists(names.underlay_netns(cluster)):
        ip(names.underlay_netns(cluster), "link", "del", ext.underlay_port, check=False)


def ensure_pod(node: NodeRecord, pod: PodRecord) -> bool:
    """Pod netns with eth0 (podIP/32, default via the node gateway) on a veth into its node.

    Returns True when the veth was (re)created, so the datapath must be attached again.
    """
    ensure_netns(pod.netns)
    node_links = links(node.netns)
    created = False
    if pod.veth not in node_links or names.POD_IFNAME not in links(pod.netns):
        ip(node.netns, "link", "del", pod.veth, check=False)
        ip(pod.netns, "link", "del", names.POD_IFNAME, check=False)
        ip(node.netns, "link", "add", pod.veth, "type", "veth",
           "peer", "name", names.POD_IFNAME, "netns", pod.netns)
        ip(node.netns, "neigh", "flush", "all", check=False)
        created = True
    gw = node.gateway
    ip_batch(pod.netns, [
        f"addr replace {pod.ip}/32 dev {names.POD_IFNAME}",
        f"link set {names.POD_IFNAME} up",
        f"route replace {gw}/32 dev {names.POD_IFNAME} scope link",
        f"route replace default via {gw} dev {names.POD_IFNAME}",
    ])
    ip_batch(node.netns, [
        f"link set {pod.veth} up",
        f"route replace {pod.ip}/32 dev {pod.veth} scope link proto {LAB_RTPROTO}",
    ])
    return created


def remove_pod(node_netns: str, pod: PodRecord) -> None:
    """Deleting the pod netns destroys its veth pair and with it the node route."""
    delete_netns(pod.netns)
    if exists(node_netns):
        ip(node_netns, "link", "del", pod.veth, check=False)

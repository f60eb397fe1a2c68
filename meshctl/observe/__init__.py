"""meshctl.observe: a live node -> the same NodeState type compile produces.

pyinfra-style: `read` touches the kernel and returns raw facts, `parse` turns them into a
NodeState without the kernel (unit-testable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network

from meshctl.dataplane.node import NodeDatapath
from meshctl.errors import DataplaneError, ObserveError
from meshctl.nodestate import EndpointEntry, FrozenMap, IpcacheEntry, NodeState, PolicyEntry, PolicyKey
from meshctl.observe import mapcache


def observe_node(cluster: str, node: str, netns: str | None) -> NodeState:
    """The node's live datapath state; a node never loaded observes as NodeState(node)."""
    from meshctl.dataplane.dnsproxy import DnsFiles, learned_ipcache, read_rules
    from meshctl.dataplane.envoy import ProxyFiles, running_http
    from meshctl.observe.parse import parse_node  # here: an incremental plan reads only endpoint maps
    from meshctl.observe.read import read_node
    from meshctl.observe.wireguard import observe_wireguard

    try:
        cache = mapcache.load()
        state = parse_node(read_node(NodeDatapath(cluster, node, netns)), cache)
        cache.save()
        dns_files = DnsFiles.of(cluster, node)
        dns, fqdn = read_rules(dns_files)
        return replace(state, encryption=observe_wireguard(cluster, node, netns),
                       http=running_http(ProxyFiles.of(cluster, node)), dns=dns, fqdn=fqdn,
                       ipcache=without_learned(state.ipcache, learned_ipcache(dns_files)))
    except DataplaneError as err:
        raise ObserveError(node, str(err)) from err


def without_learned(ipcache: FrozenMap[IPv4Network, IpcacheEntry],
                    learned: Mapping[IPv4Network, int]) -> FrozenMap[IPv4Network, IpcacheEntry]:
    """The ipcache without the IPs the DNS proxy learned (runtime state, not intent): an entry
    stays when its identity is not the one the proxy wrote (a hand change is drift)."""
    if not learned:
        return ipcache
    return FrozenMap({p: e for p, e in ipcache.items() if learned.get(p) != e.identity})


@dataclass(frozen=True)
class EndpointMaps:
    """What an incremental plan reads of a node (meshctl.app.increment): the entries of some endpoints
    in the endpoints map and their policy maps (an endpoint absent there has none)."""

    endpoints: dict[IPv4Address, EndpointEntry]
    policies: dict[int, FrozenMap[PolicyKey, PolicyEntry]]
    foreign: bool  # some entry read is in a form compile never writes


def observe_endpoint_maps(cluster: str, node: str, netns: str | None,
                          endpoints: Mapping[int, IPv4Address]) -> EndpointMaps:
    """The endpoints-map entries and policy maps of `endpoints` (endpoint id -> address)."""
    from meshctl.dataplane.libbpf import Map
    from meshctl.dataplane.maps import PolicyMaps, decode_endpoint_table
    from meshctl.observe.parse import parse_policy

    dp = NodeDatapath(cluster, node, netns)
    try:
        cache = mapcache.load()
        with Map.from_pin(dp.map_pin("endpoints")) as m:
            found = [(ip.packed, m.lookup(ip.packed)) for ip in endpoints.values()]
        table, foreign = decode_endpoint_table([(k, v) for k, v in found if v is not None])
        with PolicyMaps(Map.from_pin(dp.map_pin(PolicyMaps.map_name))) as pm:
            dumps = pm.read_dumps(frozenset(endpoints))
        policies = {}
        for ep, dump in dumps.items():
            policies[ep], odd = parse_policy(dump, cache)
            foreign = [*foreign, *odd]
        cache.save()
    except DataplaneError as err:
        raise ObserveError(node, str(err)) from err
    return EndpointMaps(dict(table.items()), policies, bool(foreign))


def fingerprint(cluster: str, node: str, netns: str | None) -> str:
    return observe_node(cluster, node, netns).fingerprint()


__all__ = ["EndpointMaps", "fingerprint", "observe_endpoint_maps", "observe_node"]

"""Write identities, endpoints and policy entries straight into a lab node's maps.

For tests and benchmarks that need enforcement in the lab without going through compile and
apply (which own these maps in normal use): `open_all` lets every pod talk with enforcement
off, `seed_node` writes exactly the entries given.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network

from meshctl.dataplane.maps import EndpointsMap, IpcacheMap, PolicyMaps
from meshctl.dataplane.node import node_pin_dir
from meshctl.lab import registry
from meshctl.nodestate import EndpointEntry, IpcacheEntry, PolicyEntry, PolicyKey


def seed_node(cluster: str, node: str, *,
              ipcache: Mapping[IPv4Network, int] | None = None,
              endpoints: Mapping[IPv4Address, EndpointEntry] | None = None,
              policies: Mapping[int, Mapping[PolicyKey, PolicyEntry]] | None = None) -> None:
    """Upsert ipcache (prefix -> identity) and endpoints; replace whole policies per endpoint."""
    pins = node_pin_dir(cluster, node)
    if ipcache:
        with IpcacheMap.from_dir(pins) as m:
            m.upsert({p: IpcacheEntry(i) for p, i in ipcache.items()})  # type: ignore[attr-defined]
    for ep, entries in (policies or {}).items():
        with PolicyMaps.from_dir(pins) as m:
            m.swap(ep, entries)  # type: ignore[attr-defined]
    if endpoints:
        with EndpointsMap.from_dir(pins) as m:
            m.upsert(endpoints)  # type: ignore[attr-defined]


def open_all(cluster: str, identities: Mapping[str, int] | None = None) -> dict[str, int]:
    """Endpoint entries with enforcement off for every pod, ipcache /32 for every pod on every
    node: the lab then forwards everything, as without a datapath. Returns pod -> identity."""
    reg = registry.require(cluster)
    ids = dict(identities or {})
    for i, key in enumerate(sorted(reg.pods)):
        ids.setdefault(key, 60000 + i)
    ipc = {IPv4Network(f"{p.ip}/32"): ids[k] for k, p in reg.pods.items()}
    for node in reg.nodes:
        eps = {p.address: EndpointEntry(endpoint_id=_endpoint_id(reg, k), identity=ids[k],
                                        enforce_ingress=False, enforce_egress=False)
               for k, p in reg.pods.items() if p.node == node}
        seed_node(cluster, node, ipcache=ipc, endpoints=eps)
    return ids


def _endpoint_id(reg: registry.Registry, key: str) -> int:
    return sorted(reg.pods).index(key) + 1

"""Give every Service its addresses, as the API server would, and check them against each other.

meshctl has no API server to allocate a clusterIP or a nodePort, so the loader does it,
deterministically: a missing clusterIP is the address at sha256("namespace/name") inside
`cluster.serviceCIDR` (skipping the network address, the first host, which Kubernetes keeps for
the `kubernetes` service, and the broadcast address), probing upwards on a collision; a missing
nodePort is sha256("namespace/name/port/protocol") in 30000-32767, probing likewise. Services
are allocated in name order after every written address is taken, so the same repo always
gives the same addresses, and adding a service moves another one only on a hash collision.
Write `clusterIP`/`nodePort` to pin an address for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network

from meshctl.errors import SourceError
from meshctl.model.service import NODE_PORT_RANGE, Service

ErrorAt = Callable[[Service, tuple[str | int, ...], str], SourceError]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def allocate_cluster_ip(key: str, cidr: IPv4Network, taken: set[IPv4Address]) -> IPv4Address | None:
    """The first free address at or after hash(key) in `cidr`'s usable range (None when full)."""
    first = int(cidr.network_address) + 2
    count = cidr.num_addresses - 3
    if count <= 0:
        return None
    start = _hash(key) % count
    for i in range(count):
        addr = IPv4Address(first + (start + i) % count)
        if addr not in taken:
            return addr
    return None


def allocate_node_port(key: str, taken: set[int]) -> int | None:
    low, high = NODE_PORT_RANGE
    count = high - low + 1
    start = _hash(key) % count
    for i in range(count):
        port = low + (start + i) % count
        if port not in taken:
            return port
    return None


def resolve_services(services: Sequence[Service], service_cidr: IPv4Network, error: ErrorAt) -> list[Service]:
    """`services` with clusterIP and nodePorts filled in; SourceError on conflicts."""
    ips: dict[IPv4Address, Service] = {}
    node_ports: dict[int, Service] = {}
    for svc in services:
        if svc.cluster_ip is not None:
            if svc.cluster_ip not in service_cidr:
                raise error(svc, ("spec", "clusterIP"),
                            f"{svc.cluster_ip} is outside the service CIDR {service_cidr} "
                            "(cluster.serviceCIDR in meshctl.toml)")
            if svc.cluster_ip in ips:
                raise error(svc, ("spec", "clusterIP"),
                            f"{svc.cluster_ip} is also the clusterIP of {ips[svc.cluster_ip].key}")
            ips[svc.cluster_ip] = svc
        for i, port in enumerate(svc.ports):
            if port.node_port is not None:
                other = node_ports.get(port.node_port)
                if other is not None:
                    raise error(svc, ("spec", "ports", i, "nodePort"),
                                f"nodePort {port.node_port} is also used by {other.key}")
                node_ports[port.node_port] = svc
    out: dict[str, Service] = {s.key: s for s in services}
    for svc in sorted(services, key=lambda s: s.key):
        update: dict[str, object] = {}
        if svc.cluster_ip is None and not svc.headless:
            ip = allocate_cluster_ip(svc.key, service_cidr, set(ips))
            if ip is None:
                raise error(svc, ("spec", "clusterIP"), f"the service CIDR {service_cidr} is full")
            ips[ip] = svc
            update["cluster_ip"] = ip
        if svc.type != "ClusterIP" and any(p.node_port is None for p in svc.ports):
            ports = []
            for p in svc.ports:
                if p.node_port is None:
                    port = allocate_node_port(f"{svc.key}/{p.port}/{p.protocol}", set(node_ports))
                    if port is None:
                        raise error(svc, ("spec", "ports"), "no free nodePort is left in 30000-32767")
                    node_ports[port] = svc
                    p = p.model_copy(update={"node_port": port})
                ports.append(p)
            update["ports"] = tuple(ports)
        if update:
            out[svc.key] = svc.model_copy(update=update)
    return [out[s.key] for s in services]

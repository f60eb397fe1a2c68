"""Services -> each node's LoadBalancerState (kube-proxy replacement), pure.

Like Cilium's pkg/loadbalancer: every frontend (ClusterIP:port; each node's address:nodePort for
NodePort/LoadBalancer services; each external/LoadBalancer IP:port) is its own service entry with
its own backends. externalTrafficPolicy Local keeps only the node's own backends on external
frontends (the ClusterIP frontend keeps them all). Backend and service ids are derived from the
addresses (a hash, probed on collision), so they are stable across plans and equal on every node
without any allocation state: an id never changes meaning while a flow holds it.

Maglev: for each frontend, the table of meshctl.compile.maglev over its backends' keys
("ip:port/PROTO") with the cluster's seed: identical on every node for the same inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Protocol

from meshctl.compile.backends import selects, target_port
from meshctl.compile.maglev import maglev_table
from meshctl.model.inventory import Pod
from meshctl.model.service import Service, ServicePort
from meshctl.nodestate import (
    PROTO_TCP,
    PROTO_UDP,
    FrozenMap,
    LbBackendEntry,
    LbFrontend,
    LbService,
    LoadBalancerState,
)

PROTOCOLS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP}  # SCTP services are not load-balanced here
ID_SPACE = (1 << 31) - 1


class LbSettings(Protocol):
    """What compile reads of desired.config.load_balancer (model.config.LoadBalancerSettings)."""

    kube_proxy_replacement: bool
    mode: str
    algorithm: str
    maglev_table_size: int
    maglev_hash_seed: str


@dataclass(frozen=True)
class LbNode:
    """A node as the load balancer needs it: its underlay address and device."""

    name: str
    underlay_ip: IPv4Address
    interface: str = "eth0"


@dataclass(frozen=True)
class _Frontend:
    frontend: LbFrontend
    service: Service
    port: ServicePort
    external: bool
    node: str | None = None  # a NodePort frontend belongs to one node's address
    backends: tuple[LbBackendEntry, ...] = field(default=())


def settings_text(s: LbSettings) -> str:
    """What the node records: a change of any of these is a replace in the plan."""
    return (f"mode={s.mode} algorithm={s.algorithm} tableSize={s.maglev_table_size} "
            f"hashSeed={s.maglev_hash_seed}")


def backend_key(b: LbBackendEntry) -> str:
    return str(b)


def stable_ids(keys: Iterable[str]) -> dict[str, int]:
    """key -> id in 1..2^31-1 from sha256 of the key; collisions probe to the next free id in
    sorted key order (deterministic for a given set)."""
    out: dict[str, int] = {}
    used: set[int] = set()
    for key in sorted(set(keys)):
        i = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % ID_SPACE + 1
        while i in used:
            i = i % ID_SPACE + 1
        used.add(i)
        out[key] = i
    return out


def _selects(svc: Service, pod: Pod) -> bool:
    """A backend needs an address too (a pod not scheduled yet is no endpoint)."""
    return pod.pod_ip is not None and selects(svc, pod)


def frontend_nodes(services: Sequence[Service], pods: Sequence[Pod]) -> dict[str, tuple[str, ...]]:
    """ClusterIP / external address -> the nodes of the pods behind it (sorted).

    A connection to a service address is decided by its backends' nodes as well as the
    client's, so apply runs a check to that address once all of them carry the new state.
    """
    out: dict[str, set[str]] = {}
    for svc in services:
        if svc.headless or svc.cluster_ip is None:
            continue
        nodes = {p.node_name for p in pods if _selects(svc, p) and p.node_name}
        for addr in (svc.cluster_ip, *svc.external_addresses):
            out.setdefault(str(addr), set()).update(nodes)
    return {a: tuple(sorted(n)) for a, n in out.items()}



def _frontends(services: Sequence[Service], nodes: Sequence[LbNode]) -> list[_Frontend]:
    out: list[_Frontend] = []
    for svc in services:
        if svc.headless or svc.cluster_ip is None:
            continue
        for port in svc.ports:
            proto = PROTOCOLS.get(port.protocol)
            if proto is None:
                continue
            out.append(_Frontend(LbFrontend(svc.cluster_ip, port.port, proto), svc, port, False))
            if svc.type in ("NodePort", "LoadBalancer") and port.node_port:
                out.extend(_Frontend(LbFrontend(n.underlay_ip, port.node_port, proto), svc, port, True,
                                     n.name) for n in nodes)
            out.extend(_Frontend(LbFrontend(ip, port.port, proto), svc, port, True)
                       for ip in svc.external_addresses)
    return out


def compile_load_balancer(
    services: Sequence[Service], pods: Sequence[Pod], nodes: Sequence[LbNode], settings: LbSettings
) -> dict[str, LoadBalancerState]:
    """node name -> its LoadBalancerState; {} when kubeProxyReplacement is off."""
    if not settings.kube_proxy_replacement:
        return {}
    frontends = _frontends(services, nodes)
    pod_node: dict[IPv4Address, str] = {}
    resolved: list[tuple[_Frontend, list[tuple[LbBackendEntry, str]]]] = []
    for fe in frontends:
        bes = []
        for pod in pods:
            if not _selects(fe.service, pod):
                continue
            target = target_port(fe.port, pod)
            if target is None:
                continue
            assert pod.pod_ip is not None
            pod_node[pod.pod_ip] = pod.node_name
            bes.append((LbBackendEntry(pod.pod_ip, target, fe.frontend.protocol), pod.node_name))
        resolved.append((fe, sorted(set(bes))))
    backend_ids = stable_ids(backend_key(b) for _, bes in resolved for b, _ in bes)
    service_ids = stable_ids(str(fe.frontend) for fe, _ in resolved)
    text = settings_text(settings)
    dsr_protocols = {"dsr": {PROTO_TCP, PROTO_UDP}, "hybrid": {PROTO_TCP}}.get(settings.mode, set())

    out: dict[str, LoadBalancerState] = {}
    for node in nodes:
        services_of: dict[LbFrontend, LbService] = {}
        backends_of: dict[int, LbBackendEntry] = {}
        for fe, bes in resolved:
            if fe.node is not None and fe.node != node.name:
                continue  # another node's NodePort address
            if fe.external and fe.service.external_traffic_policy == "Local":
                bes = [(b, n) for b, n in bes if n == node.name]
            keys = [backend_key(b) for b, _ in bes]
            ids = tuple(backend_ids[k] for k in keys)
            table: tuple[int, ...] = ()
            if settings.algorithm == "maglev" and ids:
                table = tuple(ids[i] for i in maglev_table(keys, settings.maglev_table_size,
                                                           settings.maglev_hash_seed))
            affinity = fe.service.session_affinity_timeout if fe.service.session_affinity == "ClientIP" else 0
            services_of[fe.frontend] = LbService(
                service_id=service_ids[str(fe.frontend)],
                backends=ids,
                maglev=table,
                affinity_timeout_s=affinity,
                external=fe.external,
                dsr=fe.external and fe.frontend.protocol in dsr_protocols,
                name=fe.service.key,
            )
            for (b, bnode), i in zip(bes, ids, strict=True):
                backends_of[i] = LbBackendEntry(b.address, b.port, b.protocol, local=bnode == node.name)
        out[node.name] = LoadBalancerState(
            enabled=True,
            interface=node.interface,
            snat_address=node.underlay_ip,
            settings=text,
            services=FrozenMap(services_of),
            backends=FrozenMap(backends_of),
        )
    return out


def service_names(states: Mapping[str, LoadBalancerState]) -> dict[LbFrontend, str]:
    """frontend -> "namespace/name" over every node (plans name services by it)."""
    return {f: s.name for st in states.values() for f, s in st.services.items() if s.name}
